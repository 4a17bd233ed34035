import Foundation
import InferWireClient
import InferWireCore
import InferWireProto
import InferWireServer
import InferWireWire
import NIOCore
import Testing

@Suite("Connection limits over TCP", .timeLimit(.minutes(1)))
struct ConnectionLimitTests {
    @Test("a connection beyond the per-address limit is told why and closed; a freed place is usable again")
    func perAddress() async throws {
        try await withServer(limits: .init(maxConnectionsPerAddress: 2)) { port in
            let first = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let second = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            do {
                let third = try await InferWireClient.connect(host: "127.0.0.1", port: port)
                await third.close()
                Issue.record("a third connection from one address was served")
            } catch let error as InferWireError {
                #expect(error.code == .resourceExhausted)
                #expect(error.message.contains("too many connections from 127.0.0.1 (limit 2)"))
            }
            // The two admitted connections are unaffected.
            #expect(try await first.serverLive())
            #expect(try await second.serverLive())
            await second.close()
            // The server sees the close asynchronously; a new connection succeeds once it has
            // (bounded by time, not by a number of tries, so a busy machine does not fail it).
            var reconnected: InferWireClient?
            let deadline = ContinuousClock.now + .seconds(30)
            while reconnected == nil, ContinuousClock.now < deadline {
                reconnected = try? await InferWireClient.connect(host: "127.0.0.1", port: port)
                if reconnected == nil { await Task.yield() }
            }
            let client = try #require(reconnected)
            #expect(try await client.serverLive())
            await client.close()
            await first.close()
        }
    }

    @Test("a client that connects and never sends its preface is closed after the handshake timeout")
    func silentClient() async throws {
        try await withServer(limits: .init(handshakeTimeout: .milliseconds(200))) { port in
            try await withRawConnection(port: port) { connection in
                // Nothing sent: the server closes the connection without a word.
                let received = try await connection.readToEnd()
                #expect(received.isEmpty)
            }
        }
    }

    @Test("a connection that stops sending in the middle of a frame is told so and closed; a frame in pieces is not")
    func stalledFrame() async throws {
        try await withServer(limits: .init(frameStallTimeout: .milliseconds(300))) { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                _ = try await connection.readFrame(ofType: .hello)
                // A PING header promising 8 payload bytes, then 3 of them and silence.
                var partial = ByteBuffer()
                FrameHeader(payloadLength: 8, type: .ping).write(to: &partial)
                partial.writeBytes([1, 2, 3])
                try await connection.send(partial)
                let goAway = try #require(try await connection.readFrame(ofType: .goAway)?.goAway)
                #expect(goAway.code == .invalidArgument)
                #expect(goAway.message.contains("in the middle of a frame"), "\(goAway.message)")
            }
        }
        try await withServer(limits: .init(frameStallTimeout: .seconds(20))) { port in
            // A frame that arrives in pieces, well within the timeout, is served.
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                _ = try await connection.readFrame(ofType: .hello)
                var header = ByteBuffer()
                FrameHeader(payloadLength: 2, type: .ping).write(to: &header)
                try await connection.send(header)
                try await Task.sleep(for: .milliseconds(50))
                try await connection.send([7])
                try await Task.sleep(for: .milliseconds(50))
                try await connection.send([8])
                let pong = try #require(try await connection.readFrame())
                #expect(pong.header.type == .pong)
                #expect([UInt8](buffer: pong.payload) == [7, 8])
            }
        }
    }
}
