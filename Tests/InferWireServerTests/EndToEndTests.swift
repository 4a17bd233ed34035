import Foundation
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import InferWireServer
import InferWireWire
import NIOCore
import NIOPosix
import Testing

@testable import InferWireClient

@Suite("Serving over TCP", .timeLimit(.minutes(1)))
struct EndToEndTests {
    @Test("add_sub answers with the sum and difference and names the version")
    func addSub() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let result = try await client.infer(
                model: "add_sub", inputs: addSubInputs([1, 2, 3, 4], [10, 20, 30, 40]))
            #expect(result.modelVersion == 1)
            #expect(result["OUTPUT0"]?.values(as: Float.self) == [11, 22, 33, 44])
            #expect(result["OUTPUT1"]?.values(as: Float.self) == [-9, -18, -27, -36])
            #expect(result["OUTPUT0"]?.shape == [1, 4])
            await client.close()
        }
    }

    @Test("health and metadata calls describe the server and its models")
    func metadata() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            #expect(client.hello.version == 1)
            #expect(client.hello.maxFrameSize == 64 << 20)
            #expect(try await client.serverLive())
            #expect(try await client.serverReady())
            let server = try await client.serverMetadata()
            #expect(server.name == "inferwire")
            #expect(server.protocolVersions == [1])
            let model = try await client.modelMetadata("add_sub")
            #expect(model.versions == [1])
            #expect(model.inputs.map(\.name) == ["INPUT0", "INPUT1"])
            #expect(model.inputs[0].shape == [-1, 4])
            #expect(model.inputs[0].dataType == .fp32)
            #expect(model.maxBatchSize == 64)
            #expect(try await client.modelReady("add_sub").ready)
            #expect(try await client.modelReady("add_sub", version: 7).ready == false)
            #expect(try await client.modelReady("nope").ready == false)
            #expect(try await client.ping() > .zero)
            await client.close()
        }
    }

    @Test("server metadata reports the BLAS kernel the server computes with")
    func runtimeFacts() async throws {
        let blas = try BLAS.load()
        let dispatcher = RequestDispatcher(registry: try makeRegistry(), info: ServerInfo(runtime: blas.facts))
        try await withServer(dispatcher: dispatcher) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let server = try await client.serverMetadata()
            #expect(server.runtime["blas.kernel"] == blas.kernel)
            #expect(server.runtime["blas.library"] == blas.library)
            await client.close()
        }
    }

    @Test("hundreds of concurrent calls share one connection and each gets its own answer")
    func multiplexing() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<300 {
                    group.addTask {
                        let a = (0..<4).map { Float(i * 4 + $0) }
                        let b = [Float](repeating: Float(i), count: 4)
                        let result = try await client.infer(model: "add_sub", inputs: addSubInputs(a, b))
                        #expect(result["OUTPUT0"]?.values(as: Float.self) == zip(a, b).map(+))
                    }
                }
                try await group.waitForAll()
            }
            await client.close()
        }
    }

    @Test("responses come back out of order, matched by request id")
    func outOfOrder() async throws {
        try await withServer { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                try await connection.sendRequest(id: 1, delayRequest(ms: 400))
                try await connection.sendRequest(id: 2, delayRequest(ms: 0))
                try await connection.sendRequest(
                    id: 3, inferRequest("add_sub", addSubInputs([1, 1, 1, 1], [1, 1, 1, 1])))
                var order: [UInt32] = []
                while order.count < 3, let frame = try await connection.readFrame() {
                    if frame.header.type == .response { order.append(frame.header.requestID) }
                }
                #expect(order.count == 3)
                #expect(order.last == 1)
            }
        }
    }

    @Test("a bad request gets its error and the connection's other requests carry on")
    func errorsAreIsolated() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            async let slow = client.infer(delayRequest(ms: 200))
            await #expect { try await client.infer(model: "nope", inputs: []) } throws: {
                ($0 as? InferWireError)?.code == .notFound
            }
            await #expect {
                try await client.infer(
                    model: "failing", inputs: [Tensor(name: "X", values: [1] as [Float], shape: [1])])
            } throws: {
                let error = $0 as? InferWireError
                return error?.code == .internal && error?.message.contains("model 'failing' version 1 failed") == true
            }
            #expect(
                try await slow.outputs[0].rawContents == Data(withUnsafeBytes(of: Int32(200).littleEndian) { Data($0) })
            )
            #expect(try await client.serverLive())
            await client.close()
        }
    }

    @Test("inputs that do not match the signature are INVALID_ARGUMENT, each with a reason")
    func validation() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            func expectInvalid(_ request: Inferwire_V1_InferRequest, _ fragment: String) async {
                await #expect {
                    try await client.infer(request)
                } throws: {
                    let error = $0 as? InferWireError
                    return error?.code == .invalidArgument && error?.message.contains(fragment) == true
                }
            }
            // Wrong dtype.
            await expectInvalid(
                inferRequest(
                    "add_sub",
                    [
                        Tensor(name: "INPUT0", values: [1, 2, 3, 4] as [Int32], shape: [1, 4]),
                        addSubInputs([0, 0, 0, 0], [0, 0, 0, 0])[1],
                    ]),
                "must be FP32, got INT32")
            // Wrong shape.
            await expectInvalid(
                inferRequest(
                    "add_sub",
                    [
                        Tensor(name: "INPUT0", values: [1, 2, 3] as [Float], shape: [1, 3]),
                        Tensor(name: "INPUT1", values: [1, 2, 3] as [Float], shape: [1, 3]),
                    ]),
                "has shape [1, 3]")
            // Byte count not matching shape × dtype.
            var short = inferRequest("add_sub", addSubInputs([1, 2, 3, 4], [1, 2, 3, 4]))
            short.inputs[0].rawContents.removeLast()
            await expectInvalid(short, "raw_contents has 15 bytes")
            // Missing and unknown inputs, unknown outputs, batch too large.
            await expectInvalid(
                inferRequest("add_sub", [addSubInputs([1, 2, 3, 4], [1, 2, 3, 4])[0]]), "needs input 'INPUT1'")
            await expectInvalid(
                inferRequest(
                    "add_sub",
                    addSubInputs([1, 2, 3, 4], [1, 2, 3, 4]) + [
                        Tensor(name: "EXTRA", values: [1] as [Float], shape: [1])
                    ]), "has no input 'EXTRA'")
            var unknownOutput = inferRequest("add_sub", addSubInputs([1, 2, 3, 4], [1, 2, 3, 4]))
            unknownOutput.outputNames = ["OUTPUT9"]
            await expectInvalid(unknownOutput, "has no output 'OUTPUT9'")
            let big = [Float](repeating: 1, count: 65 * 4)
            await expectInvalid(inferRequest("add_sub", addSubInputs(big, big)), "batch size 65")

            // Asking for one output returns only that one.
            var one = inferRequest("add_sub", addSubInputs([1, 2, 3, 4], [1, 1, 1, 1]))
            one.outputNames = ["OUTPUT1"]
            #expect(try await client.infer(one).outputs.map(\.name) == ["OUTPUT1"])
            await client.close()
        }
    }

    @Test("compressed requests and responses round-trip, and the response really is compressed")
    func compression() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(
                host: "127.0.0.1", port: port, configuration: .init(compression: true))
            let a = (0..<(64 * 4)).map { Float($0 % 7) }
            let result = try await client.infer(model: "add_sub", inputs: addSubInputs(a, a))
            #expect(result["OUTPUT0"]?.values(as: Float.self) == a.map { $0 * 2 })
            await client.close()

            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                try await connection.sendRequest(
                    id: 5, inferRequest("add_sub", addSubInputs(a, a)), flags: .compressResponse)
                let frame = try #require(try await connection.readFrame(ofType: .response))
                #expect(frame.header.flags.contains(.compressed))
                let inflated = try PayloadCompression.decompress(
                    frame.payload, limit: 1 << 20, allocator: ByteBufferAllocator())
                let response = try Inferwire_V1_InferResponse(serializedBytes: [UInt8](buffer: inflated))
                #expect(
                    try Tensor(wire: response.outputs[1]).values(as: Float.self)
                        == [Float](repeating: 0, count: a.count))
            }
        }
    }

    @Test("a deadline the server cannot meet fails with DEADLINE_EXCEEDED and the connection stays usable")
    func deadline() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            await #expect { try await client.infer(delayRequest(ms: 500), timeout: .milliseconds(50)) } throws: {
                ($0 as? InferWireError)?.code == .deadlineExceeded
            }
            #expect(try await client.serverLive())
            await client.close()
        }
    }

    @Test("a request whose deadline has passed when it reaches the model is not executed")
    func expiredBeforeExecution() async throws {
        try await withServer { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                // 1 µs: gone before the model can start.
                try await connection.sendRequest(
                    id: 1, inferRequest("add_sub", addSubInputs([1, 2, 3, 4], [1, 2, 3, 4])), timeoutMicros: 1)
                let frame = try #require(try await connection.readFrame(ofType: .error))
                #expect(frame.status?.code == .deadlineExceeded)
            }
        }
    }

    @Test("cancelling a call frees the caller at once; the server answers CANCELLED")
    func cancellation() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let task = Task { try await client.infer(delayRequest(ms: 2000)) }
            try await Task.sleep(for: .milliseconds(50))
            task.cancel()
            await #expect { try await task.value } throws: { ($0 as? InferWireError)?.code == .cancelled }
            #expect(try await client.serverLive())
            await client.close()

            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                try await connection.sendRequest(id: 9, delayRequest(ms: 2000))
                try await connection.send(
                    Frame.encode(
                        FrameHeader(payloadLength: 0, type: .cancel, requestID: 9), payload: nil,
                        allocator: ByteBufferAllocator()))
                let frame = try #require(try await connection.readFrame(ofType: .error))
                #expect(frame.header.requestID == 9)
                #expect(frame.status?.code == .cancelled)
            }
        }
    }

    @Test("the client holds calls beyond the server's concurrency limit and sends them as slots free up")
    func clientQueuesBeyondLimit() async throws {
        try await withServer(limits: .init(maxConcurrentRequests: 2)) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            #expect(client.hello.maxConcurrentRequests == 2)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<10 {
                    group.addTask {
                        let result = try await client.infer(delayRequest(ms: Int32(i % 3) * 10))
                        #expect(
                            result.outputs[0].rawContents
                                == Data(withUnsafeBytes(of: (Int32(i % 3) * 10).littleEndian) { Data($0) }))
                    }
                }
                try await group.waitForAll()
            }
            await client.close()
        }
    }

    @Test("past the per-connection limit a request is RESOURCE_EXHAUSTED and the others complete")
    func concurrencyLimit() async throws {
        try await withServer(limits: .init(maxConcurrentRequests: 2)) { port in
            try await withRawConnection(port: port) { connection in
                try await connection.sendPreface()
                for id in UInt32(1)...3 { try await connection.sendRequest(id: id, delayRequest(ms: 200)) }
                var outcomes: [UInt32: FrameType] = [:]
                while outcomes.count < 3, let frame = try await connection.readFrame() {
                    if frame.header.requestID != 0 { outcomes[frame.header.requestID] = frame.header.type }
                    if frame.header.requestID == 3 { #expect(frame.status?.code == .resourceExhausted) }
                }
                #expect(outcomes == [1: .response, 2: .response, 3: .error])
            }
        }
    }
}

@Suite("Client errors people read")
struct ClientErrorTests {
    @Test("a refused connection says so in words, not in NIO's debug description")
    func refused() async throws {
        // A port that was just free: bind it, note it, close it.
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(
            host: "127.0.0.1", port: 0
        ).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        do {
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            await client.close()
            Issue.record("connected to a closed port")
        } catch let error as InferWireError {
            #expect(error.code == .unavailable)
            #expect(
                error.message
                    == "cannot connect to 127.0.0.1:\(port): connection refused: nothing is listening there (is the server running, on that port?)"
            )
            #expect(!error.message.contains("SingleConnectionFailure"))
            #expect(error.cause != nil)
        }
    }

    @Test("a failure on an established connection is described in words, not as NIO's debug output")
    func established() {
        #expect(ConnectFailure.describe(IOError(errnoCode: ECONNRESET, reason: "read")) == "connection reset by peer")
        #expect(ConnectFailure.describe(ChannelError.eof) == "the server closed the connection")
        #expect(ConnectFailure.describe(ChannelError.ioOnClosedChannel) == "the connection is closed")
    }
}
