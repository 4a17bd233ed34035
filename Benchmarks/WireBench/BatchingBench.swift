import ArgumentParser
import Foundation
import Histogram
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import InferWireServer
import InferWireWire
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The MLP example served twice by one server — as `mlp` with dynamic batching and as
/// `mlp_unbatched` without — and loaded by a blocking pipelined client: throughput at 64
/// requests in flight and p50 at 1 in flight, rounds interleaved.
struct BatchingBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batching", abstract: "Dynamic batching on vs off on the MLP example.")

    @Option(help: "Model repository holding the mlp example.")
    var repository = "examples/models"

    @Option(help: "Interleaved rounds; medians are reported.")
    var rounds = 3

    @Option(help: "Seconds per throughput measurement.")
    var seconds = 3.0

    @Option(help: "Round trips per latency measurement.")
    var iterations = 3000

    func run() async throws {
        let repository = ModelRepository(directory: self.repository, loaders: [OnnxModelLoader()])
        let batchedConfig = try repository.readConfig(model: "mlp")
        var unbatchedConfig = batchedConfig
        unbatchedConfig.clearDynamicBatching()
        let batched = try repository.load(model: "mlp", version: 1, config: batchedConfig)
        // The same model instance, served as a second model without the batcher.
        let unbatched = LoadedModel(name: "mlp_unbatched", version: 1, config: unbatchedConfig, model: batched.model)
        let dispatcher = RequestDispatcher(registry: ModelRegistry(contents: .init(models: [batched, unbatched])))
        try await withInProcessServer(dispatcher: dispatcher, ioThreads: 1, limits: .init(maxConcurrentRequests: 4096))
        { port in
            try self.measure(port: port, dispatcher: dispatcher)
        }
    }

    func frame(model: String) throws -> [UInt8] {
        var request = Inferwire_V1_InferRequest()
        request.modelName = model
        request.inputs = [Tensor(name: "X", values: (0..<32).map { Float($0) / 32 }, shape: [1, 32]).wire]
        let payload: [UInt8] = try request.serializedBytes()
        var buffer = ByteBuffer()
        FrameHeader(
            payloadLength: UInt32(payload.count), type: .request, method: UInt16(Inferwire_V1_Method.infer.rawValue),
            requestID: 1
        ).write(to: &buffer)
        buffer.writeBytes(payload)
        return [UInt8](buffer.readableBytesView)
    }

    func measure(port: Int, dispatcher: RequestDispatcher) throws {
        let socket = try BlockingSocket.connect(port: port)
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 8)
        defer { scratch.deallocate() }
        var preface = ByteBuffer()
        Preface().write(to: &preface)
        try socket.sendAll([UInt8](preface.readableBytesView))
        guard try socket.receiveFrame(scratch: scratch) == FrameType.hello.rawValue else {
            throw BenchError("no HELLO")
        }
        let on = try self.frame(model: "mlp")
        let off = try self.frame(model: "mlp_unbatched")

        print("Dynamic batching on the mlp example (32→256→256→2, ONNX), 1 instance, 1 I/O thread, one row per request")
        print(
            "\(self.rounds) interleaved rounds: \(self.seconds) s at 64 in flight, \(self.iterations) round trips at 1 in flight\n"
        )
        var rate: [String: [Double]] = [:]
        var p50: [String: [Double]] = [:]
        var p99: [String: [Double]] = [:]
        for _ in 0..<self.rounds {
            for (name, frame) in [("on", on), ("off", off)] {
                rate[name, default: []].append(
                    try WireBench.pipelined(socket, frame, inFlight: 64, seconds: self.seconds, scratch: scratch))
                let latency = try WireBench.pingPong(
                    socket, frame, iterations: self.iterations, scratch: scratch, expectResponse: true)
                p50[name, default: []].append(latency.p50)
                p99[name, default: []].append(latency.p99)
            }
        }
        print("batching".padding(toLength: 12, withPad: " ", startingAt: 0) + "req/s @64   p50 µs @1   p99 µs @1")
        for name in ["on", "off"] {
            print(
                name.padding(toLength: 12, withPad: " ", startingAt: 0)
                    + String(
                        format: "%9.0f   %9.1f   %9.1f", median(rate[name]!), median(p50[name]!), median(p99[name]!)))
        }
        print(String(format: "\nthroughput @64, on / off: %.2f×", median(rate["on"]!) / median(rate["off"]!)))
        print(String(format: "p50 @1, on / off: %.3f×", median(p50["on"]!) / median(p50["off"]!)))
        for (label, model) in [("batched", "mlp"), ("unbatched", "mlp_unbatched")] {
            let stats = try dispatcher.statisticsForBench(model: model)
            let executions = max(1, stats.executionCount)
            let requests = max(1, stats.requestCount)
            print(
                String(
                    format:
                        "mlp (%@): %llu requests in %llu executions, mean batch %.1f rows, mean queue %.1f µs, mean compute %.1f µs",
                    label as NSString, stats.requestCount, stats.executionCount,
                    Double(stats.requestCount) / Double(executions),
                    Double(stats.queueTimeUs) / Double(requests), Double(stats.computeTimeUs) / Double(requests)))
        }
    }
}
