import Foundation
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireProto
import InferWireServer
import InferWireWire
import Logging
import NIOCore
import ServiceLifecycle
import Testing

@Suite("Graceful shutdown", .timeLimit(.minutes(1)))
struct ShutdownTests {
    @Test("shutdown sends GOAWAY, finishes in-flight requests, refuses new ones, then returns")
    func drains() async throws {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let server = try InferWireServer(
            configuration: .init(host: "127.0.0.1", port: 0),
            dispatcher: RequestDispatcher(registry: try makeRegistry()),
            logger: quiet,
            onListening: { continuation.yield($0.port!) })
        let group = ServiceGroup(configuration: .init(services: [server], logger: quiet))

        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var iterator = ports.makeAsyncIterator()
            let port = try #require(await iterator.next())

            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                #expect(try await connection.readFrame()?.header.type == .hello)
                try await connection.sendRequest(id: 1, delayRequest(ms: 1500))
                // The request is in flight once the server has read it; a live probe after it proves that.
                try await connection.sendRequest(id: 2, method: .serverLive, Inferwire_V1_ServerLiveRequest())
                #expect(try await connection.readFrame()?.header.requestID == 2)

                await group.triggerGracefulShutdown()

                let goAway = try #require(try await connection.readFrame(ofType: .goAway)?.goAway)
                #expect(goAway.code == .unavailable)
                #expect(goAway.lastRequestID == 2)
                // Sent after GOAWAY: refused, not dropped.
                try await connection.sendRequest(id: 3, method: .serverLive, Inferwire_V1_ServerLiveRequest())
                var frames: [UInt32: Frame] = [:]
                while let frame = try await connection.readFrame() { frames[frame.header.requestID] = frame }
                // The server closed the connection only after the in-flight request was answered.
                #expect(frames[1]?.header.type == .response)
                #expect(frames[3]?.status?.code == .unavailable)
            }
            try await tasks.waitForAll()

            // Nothing listens any more.
            await #expect(throws: InferWireError.self) {
                try await InferWireClient.connect(host: "127.0.0.1", port: port)
            }
        }
    }
}
