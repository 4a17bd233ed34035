import Foundation
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireProto
import InferWireServer
import InferWireWire
import NIOCore
import Synchronization
import Testing

/// Each kind of bad input gets a clear answer, and nothing beyond it is lost.
@Suite("Bad input", .timeLimit(.minutes(1)))
struct BadInputTests {
    /// A second, well-behaved connection must be unaffected by whatever the first one did.
    func expectServerStillServes(port: Int) async throws {
        let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
        let result = try await client.infer(model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [1, 2, 3, 4]))
        #expect(result["OUTPUT0"]?.values(as: Float.self) == [2, 4, 6, 8])
        await client.close()
    }

    @Test("a frame over the limit is refused from its header alone; the connection carries on")
    func oversizedFrame() async throws {
        try await withServer(limits: .init(maxFrameSize: 4096)) { port in
            let bystander = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                #expect(try await connection.readFrame()?.header.type == .hello)
                // Only the header of a 1 GiB request: the answer must not wait for the payload.
                var header = ByteBuffer()
                FrameHeader(payloadLength: 1 << 30, type: .request, method: 6, requestID: 7).write(to: &header)
                try await connection.send(header)
                let frame = try #require(try await connection.readFrame())
                #expect(frame.header.type == .error)
                #expect(frame.header.requestID == 7)
                #expect(frame.status?.code == .resourceExhausted)
                #expect(frame.status?.message.contains("exceeds the 4096-byte limit") == true)
            }
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                // An oversized frame sent whole is skipped, and the next request on the connection works.
                var whole = ByteBuffer()
                FrameHeader(payloadLength: 5000, type: .request, method: 6, requestID: 8).write(to: &whole)
                whole.writeRepeatingByte(0x42, count: 5000)
                try await connection.send(whole)
                #expect(try await connection.readFrame(ofType: .error)?.status?.code == .resourceExhausted)
                try await connection.sendRequest(
                    id: 9, inferRequest("add_sub", addSubInputs([1, 1, 1, 1], [2, 2, 2, 2])))
                let answer = try #require(try await connection.readFrame())
                #expect(answer.header.type == .response)
                #expect(answer.header.requestID == 9)
            }
            #expect(try await bystander.serverLive())
            await bystander.close()
        }
    }

    @Test("a stream that ends inside a frame gets GOAWAY naming the truncation, then close")
    func truncatedFrame() async throws {
        try await withServer { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                var partial = ByteBuffer()
                FrameHeader(payloadLength: 100, type: .request, method: 6, requestID: 1).write(to: &partial)
                partial.writeRepeatingByte(0, count: 40)
                try await connection.send(partial)
                try await connection.closeOutput()
                let goAway = try #require(try await connection.readFrame(ofType: .goAway)?.goAway)
                #expect(goAway.code == .invalidArgument)
                #expect(goAway.message.contains("40 of 100 payload bytes"))
                #expect(try await connection.readFrame() == nil)
            }
            try await self.expectServerStillServes(port: port)
        }
    }

    @Test("garbage instead of a preface gets GOAWAY and close")
    func garbagePreface() async throws {
        try await withServer { port in
            try await withRawConnection(port: port) { connection in
                try await connection.send([0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x01, 0x02, 0x03, 0x04])
                let goAway = try #require(try await connection.readFrame()?.goAway)
                #expect(goAway.code == .invalidArgument)
                #expect(goAway.message.contains("bad connection preface"))
                #expect(try await connection.readFrame() == nil)
            }
            try await self.expectServerStillServes(port: port)
        }
    }

    @Test("an unknown frame type after the preface gets GOAWAY INVALID_ARGUMENT and close")
    func unknownFrameType() async throws {
        try await withServer { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                try await connection.send(
                    Frame.encode(
                        FrameHeader(payloadLength: 0, type: FrameType(rawValue: 0x0A)), bytes: [1, 2, 3],
                        allocator: ByteBufferAllocator()))
                let goAway = try #require(try await connection.readFrame(ofType: .goAway)?.goAway)
                #expect(goAway.code == .invalidArgument)
                #expect(goAway.message == "unknown frame type 0xa")
                #expect(try await connection.readFrame() == nil)
            }
            try await self.expectServerStillServes(port: port)
        }
    }

    @Test("an oversized request on a draining connection is UNAVAILABLE and in-flight work still completes")
    func oversizedWhileDraining() async throws {
        try await withServer(limits: .init(maxFrameSize: 4096)) { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                try await connection.sendRequest(id: 1, delayRequest(ms: 300))
                try await connection.send(
                    Frame.encode(
                        FrameHeader(payloadLength: 0, type: .goAway), payload: nil, allocator: ByteBufferAllocator()))
                var big = ByteBuffer()
                FrameHeader(payloadLength: 5000, type: .request, method: 6, requestID: 2).write(to: &big)
                big.writeRepeatingByte(0, count: 5000)
                try await connection.send(big)
                var frames: [UInt32: Frame] = [:]
                while let frame = try await connection.readFrame() { frames[frame.header.requestID] = frame }
                #expect(frames[2]?.status?.code == .unavailable)
                #expect(frames[1]?.header.type == .response)
            }
        }
    }

    @Test("an HTTP client gets a readable 400 and close")
    func httpPeer() async throws {
        try await withServer { port in
            let reply = try await withRawConnection(port: port) { connection in
                try await connection.send(Array("GET /v2/models HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
                return String(decoding: try await connection.readToEnd(), as: UTF8.self)
            }
            #expect(reply.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
            #expect(reply.contains("InferWire binary protocol"))
            try await self.expectServerStillServes(port: port)
        }
    }

    @Test("a client speaking only other protocol versions gets GOAWAY FAILED_PRECONDITION")
    func versionMismatch() async throws {
        try await withServer { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface(Preface(minVersion: 2, maxVersion: 3))
                let goAway = try #require(try await connection.readFrame()?.goAway)
                #expect(goAway.code == .failedPrecondition)
                #expect(goAway.message.contains("versions 2–3"))
                #expect(try await connection.readFrame() == nil)
            }
        }
    }

    @Test("malformed protobuf is INVALID_ARGUMENT for that request only")
    func malformedProtobuf() async throws {
        try await withServer { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                try await connection.sendRequest(id: 1, delayRequest(ms: 150))
                // Field 1, wire type 2, length 100: runs past the end.
                try await connection.send(
                    Frame.encode(
                        FrameHeader(payloadLength: 0, type: .request, method: 6, requestID: 2),
                        bytes: [0x0A, 100, 0x41], allocator: ByteBufferAllocator()))
                var seen: [UInt32: Frame] = [:]
                while seen.count < 2, let frame = try await connection.readFrame() {
                    if frame.header.requestID != 0 { seen[frame.header.requestID] = frame }
                }
                #expect(seen[2]?.status?.code == .invalidArgument)
                #expect(seen[2]?.status?.message.contains("not a valid inferwire.v1.InferRequest") == true)
                #expect(seen[1]?.header.type == .response)
            }
        }
    }

    @Test("an unknown method is UNIMPLEMENTED and the connection carries on")
    func unknownMethod() async throws {
        try await withServer { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                try await connection.send(
                    Frame.encode(
                        FrameHeader(payloadLength: 0, type: .request, method: 999, requestID: 4), payload: nil,
                        allocator: ByteBufferAllocator()))
                let frame = try #require(try await connection.readFrame(ofType: .error))
                #expect(frame.header.requestID == 4)
                #expect(frame.header.method == 999)
                #expect(frame.status?.code == .unimplemented)
                try await connection.sendRequest(id: 5, method: .serverLive, Inferwire_V1_ServerLiveRequest())
                let live = try #require(try await connection.readFrame(ofType: .response))
                #expect(try live.decode(Inferwire_V1_ServerLiveResponse.self).live)
            }
        }
    }

    @Test("an unknown model is NOT_FOUND")
    func unknownModel() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            await #expect { try await client.infer(model: "no_such_model", inputs: []) } throws: {
                let error = $0 as? InferWireError
                return error?.code == .notFound && error?.message == "model 'no_such_model' is not in the repository"
            }
            await #expect { try await client.infer(model: "add_sub", version: 42, inputs: []) } throws: {
                ($0 as? InferWireError)?.code == .notFound
            }
            await client.close()
        }
    }

    @Test("a compressed payload that inflates past the limit is RESOURCE_EXHAUSTED; a corrupt one INVALID_ARGUMENT")
    func compressionAbuse() async throws {
        try await withServer(limits: .init(maxFrameSize: 64 * 1024)) { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                let bomb = PayloadCompression.compress(
                    ByteBuffer(repeating: 0, count: 4 << 20), allocator: ByteBufferAllocator())
                #expect(bomb.readableBytes < 64 * 1024)
                try await connection.send(
                    Frame.encode(
                        FrameHeader(payloadLength: 0, type: .request, flags: .compressed, method: 6, requestID: 1),
                        payload: bomb, allocator: ByteBufferAllocator()))
                #expect(try await connection.readFrame(ofType: .error)?.status?.code == .resourceExhausted)
                try await connection.send(
                    Frame.encode(
                        FrameHeader(payloadLength: 0, type: .request, flags: .compressed, method: 6, requestID: 2),
                        bytes: [1, 2, 3, 4], allocator: ByteBufferAllocator()))
                #expect(try await connection.readFrame(ofType: .error)?.status?.code == .invalidArgument)
            }
        }
    }

    @Test("reusing an id still in flight is a protocol violation: GOAWAY and close")
    func duplicateID() async throws {
        try await withServer { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                try await connection.sendRequest(id: 3, delayRequest(ms: 300))
                try await connection.sendRequest(id: 3, delayRequest(ms: 0))
                let goAway = try #require(try await connection.readFrame(ofType: .goAway)?.goAway)
                #expect(goAway.message.contains("request id 3 is already in flight"))
                #expect(try await connection.readFrame() == nil)
            }
            try await self.expectServerStillServes(port: port)
        }
    }

    @Test("a client that disconnects mid-request costs nothing beyond that request")
    func disconnectMidRequest() async throws {
        try await withServer { port in
            for _ in 0..<20 {
                try await withRawConnection(port: port) { connection in
                    try await connection.sendPreface()
                    try await connection.sendRequest(id: 1, delayRequest(ms: 50))
                    try await connection.sendRequest(
                        id: 2, inferRequest("add_sub", addSubInputs([1, 2, 3, 4], [1, 2, 3, 4])))
                }
            }
            try await self.expectServerStillServes(port: port)
        }
    }

    @Test("queued work of a cancelled or disconnected request is skipped, not executed")
    func abandonedWorkIsSkipped() async throws {
        let counter = DelayModel.Counter()
        var config = Inferwire_V1_ModelConfig()
        config.platform = "test"
        let counted = LoadedModel(name: "counted", version: 1, config: config, model: DelayModel(counter: counter))
        @Sendable func countedRequest(ms: Int32) -> Inferwire_V1_InferRequest {
            inferRequest("counted", [Tensor(name: "DELAY_MS", values: [ms], shape: [1])])
        }
        // One instance: the first request runs for 300 ms while the rest queue behind it.
        try await withServer(extraModels: [counted]) { port in
            // Cancelled while queued.
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                for id in UInt32(1)...3 { try await connection.sendRequest(id: id, countedRequest(ms: 300)) }
                for id in UInt32(2)...3 {
                    try await connection.send(
                        Frame.encode(
                            FrameHeader(payloadLength: 0, type: .cancel, requestID: id), payload: nil,
                            allocator: ByteBufferAllocator()))
                }
                var answers: [UInt32: Frame] = [:]
                while answers.count < 3, let frame = try await connection.readFrame() {
                    if frame.header.requestID != 0 { answers[frame.header.requestID] = frame }
                }
                #expect(answers[1]?.header.type == .response)
                #expect(answers[2]?.status?.code == .cancelled)
                #expect(answers[3]?.status?.code == .cancelled)
            }
            #expect(counter.value.load(ordering: .relaxed) == 1)

            // Queued when the peer vanished (connection reset).
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                for id in UInt32(1)...3 { try await connection.sendRequest(id: id, countedRequest(ms: 300)) }
                #expect(try await connection.readFrame()?.header.type == .hello)
                try await connection.abort()
            }
            // This request queues behind the running one; the two vanished ones are skipped.
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            _ = try await client.infer(countedRequest(ms: 0))
            await client.close()
            #expect(counter.value.load(ordering: .relaxed) == 3)
        }
    }

    @Test("PING is answered with PONG carrying the same payload")
    func ping() async throws {
        try await withServer { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                try await connection.send(
                    Frame.encode(
                        FrameHeader(payloadLength: 0, type: .ping), bytes: [1, 2, 3, 4, 5, 6, 7, 8],
                        allocator: ByteBufferAllocator()))
                let pong = try #require(try await connection.readFrame(ofType: .pong))
                #expect(Array(pong.payload.readableBytesView) == [1, 2, 3, 4, 5, 6, 7, 8])
            }
        }
    }
}
