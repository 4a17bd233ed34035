import ArgumentParser
import Foundation
import Histogram
import InferWireBench
import InferWireClient
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

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inferwire-wirebench",
        abstract:
            "InferWire's benchmarks: the request path against a raw TCP floor, batching, rollouts, TLS and authentication, idle connections.",
        subcommands: [
            WireBench.self, BatchingBench.self, RolloutBench.self, SecurityBench.self, IdleBench.self,
            MetricsBench.self, FleetBench.self,
        ],
        defaultSubcommand: WireBench.self)
}

/// Measures InferWire's request path against a raw TCP echo of the same frame, in one run:
/// round-trip p50/p99 at 1 in flight and throughput at 64 in flight, rounds interleaved so
/// machine drift hits both sides alike.
struct WireBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wire",
        abstract: "Round-trip latency and throughput of InferWire next to a raw TCP echo floor.")

    @Option(help: "Model repository holding the identity model.")
    var repository = "examples/models"

    @Option(help: "Interleaved rounds; medians across rounds are reported.")
    var rounds = 5

    @Option(help: "Round trips per latency measurement.")
    var iterations = 5000

    @Option(help: "Seconds per throughput measurement.")
    var seconds = 2.0

    @Option(help: "Requests in flight for the throughput measurements.")
    var inFlight = 64

    func run() async throws {
        let logger = benchLogger
        let contents = try ModelRepository(
            directory: self.repository, loaders: ModelRepository.builtinLoaders + [OnnxModelLoader()]
        ).loadAll(logger: logger)
        let dispatcher = RequestDispatcher(registry: ModelRegistry(contents: contents))
        // One I/O thread: the server side of the comparison gets one core, like the echo thread.
        try await withInProcessServer(dispatcher: dispatcher, ioThreads: 1) { port in
            try await self.measure(serverPort: port)
        }
    }

    func measure(serverPort: Int) async throws {
        let echo = try EchoServer()
        var request = Inferwire_V1_InferRequest()
        request.modelName = "identity"
        request.inputs = [Tensor(name: "INPUT0", values: (0..<16).map { Float($0) }, shape: [1, 16]).wire]
        let payload: [UInt8] = try request.serializedBytes()
        var frame = ByteBuffer()
        FrameHeader(
            payloadLength: UInt32(payload.count), type: .request, method: UInt16(Inferwire_V1_Method.infer.rawValue),
            requestID: 1
        ).write(to: &frame)
        frame.writeBytes(payload)
        let requestFrame = [UInt8](frame.readableBytesView)

        // Handshake the raw InferWire connection once.
        let raw = try BlockingSocket.connect(port: serverPort)
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 8)
        defer { scratch.deallocate() }
        var preface = ByteBuffer()
        Preface().write(to: &preface)
        try raw.sendAll([UInt8](preface.readableBytesView))
        guard try raw.receiveFrame(scratch: scratch) == FrameType.hello.rawValue else { throw BenchError("no HELLO") }
        // Size of the answer, for the report.
        try raw.sendAll(requestFrame)
        try raw.receiveExactly(16, into: scratch)
        let responseLength = Int(UInt32(bigEndian: scratch.loadUnaligned(as: UInt32.self)))
        guard scratch[4] == FrameType.response.rawValue else { throw BenchError("identity call failed") }
        try raw.receiveExactly(responseLength, into: scratch)

        let floor = try BlockingSocket.connect(port: echo.port)
        let client = try await InferWireClient.connect(host: "127.0.0.1", port: serverPort)
        // The load generator behind `inferwire bench`, measured like the other clients so its
        // own cost is known: one connection, the same request.
        let generator = try await LoadGenerator.connect(
            servers: [("127.0.0.1", serverPort)], connectionsPerServer: 1, request: request, compression: false)

        print("InferWire wire benchmark: identity model, FP32[1,16] input")
        print(
            "request frame \(requestFrame.count) B, response frame \(16 + responseLength) B; echo floor returns the request frame"
        )
        print(
            "\(self.rounds) interleaved rounds × \(self.iterations) round trips; throughput \(self.seconds) s × \(self.rounds) at \(self.inFlight) in flight\n"
        )

        var floorP50: [Double] = []
        var floorP99: [Double] = []
        var rawP50: [Double] = []
        var rawP99: [Double] = []
        var asyncP50: [Double] = []
        var asyncP99: [Double] = []
        var generatorP50: [Double] = []
        var generatorP99: [Double] = []
        var ratios: [Double] = []
        var generatorRatios: [Double] = []
        for _ in 0..<self.rounds {
            let f = try Self.pingPong(
                floor, requestFrame, iterations: self.iterations, scratch: scratch, expectResponse: false)
            let r = try Self.pingPong(
                raw, requestFrame, iterations: self.iterations, scratch: scratch, expectResponse: true)
            let a = try await Self.asyncPingPong(client, request, iterations: self.iterations)
            let g = try await Self.generatorLevel(generator, concurrency: 1, seconds: self.seconds)
            floorP50.append(f.p50)
            floorP99.append(f.p99)
            generatorP50.append(g.latency.p50)
            generatorP99.append(g.latency.p99)
            generatorRatios.append(g.latency.p50 / r.p50)
            rawP50.append(r.p50)
            rawP99.append(r.p99)
            asyncP50.append(a.p50)
            asyncP99.append(a.p99)
            ratios.append(r.p50 / f.p50)
        }

        var floorRate: [Double] = []
        var rawRate: [Double] = []
        var asyncRate: [Double] = []
        var generatorRate: [Double] = []
        for _ in 0..<self.rounds {
            floorRate.append(
                try Self.pipelined(
                    floor, requestFrame, inFlight: self.inFlight, seconds: self.seconds, scratch: scratch))
            rawRate.append(
                try Self.pipelined(raw, requestFrame, inFlight: self.inFlight, seconds: self.seconds, scratch: scratch))
            asyncRate.append(
                try await Self.asyncConcurrent(client, request, inFlight: self.inFlight, seconds: self.seconds))
            generatorRate.append(
                try await Self.generatorLevel(generator, concurrency: self.inFlight, seconds: self.seconds).throughput)
        }
        await client.close()
        await generator.close()

        func row(_ name: String, _ p50: [Double], _ p99: [Double], _ rate: [Double]) {
            print(
                name.padding(toLength: 44, withPad: " ", startingAt: 0)
                    + String(format: "%8.1f %8.1f %12.0f", median(p50), median(p99), median(rate)))
        }
        print(
            "client → server".padding(toLength: 44, withPad: " ", startingAt: 0)
                + "  p50 µs   p99 µs   req/s @\(self.inFlight)")
        row("blocking C-style client → raw TCP echo (floor)", floorP50, floorP99, floorRate)
        row("blocking C-style client → InferWire", rawP50, rawP99, rawRate)
        row("InferWireClient (Swift async) → InferWire", asyncP50, asyncP99, asyncRate)
        row("inferwire bench generator → InferWire", generatorP50, generatorP99, generatorRate)
        print(
            String(
                format: "\nInferWire / floor, p50: %.2f× (median of per-round ratios; rounds: %@)", median(ratios),
                ratios.map { String(format: "%.2f", $0) }.joined(separator: " ")))
        print(
            String(
                format: "InferWire / floor, throughput @%d: %.2f×", self.inFlight, median(rawRate) / median(floorRate)))
        print(
            String(
                format: "generator / blocking client against InferWire, p50: %.2f× (+%.1f µs); throughput @%d: %.2f×",
                median(generatorRatios), median(generatorP50) - median(rawP50), self.inFlight,
                median(generatorRate) / median(rawRate)))
    }

    struct Latency {
        var p50: Double
        var p99: Double
    }

    static func record(_ histogram: inout Histogram<UInt64>, since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        _ = histogram.record(UInt64(max(0, elapsed.inNanoseconds)))
    }

    static func summary(_ histogram: Histogram<UInt64>) -> Latency {
        Latency(
            p50: Double(histogram.valueAtPercentile(50)) / 1000, p99: Double(histogram.valueAtPercentile(99)) / 1000)
    }

    /// One request, one answer, repeated; a warm-up of 10% is not recorded.
    static func pingPong(
        _ socket: BlockingSocket, _ frame: [UInt8], iterations: Int, scratch: UnsafeMutableRawBufferPointer,
        expectResponse: Bool
    ) throws -> Latency {
        var histogram = Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
        for i in 0..<(iterations + iterations / 10) {
            let start = ContinuousClock.now
            try socket.sendAll(frame)
            let type = try socket.receiveFrame(scratch: scratch)
            if expectResponse, type != FrameType.response.rawValue {
                throw BenchError("server answered frame type \(type)")
            }
            if i >= iterations / 10 { record(&histogram, since: start) }
        }
        return summary(histogram)
    }

    static func asyncPingPong(_ client: InferWireClient, _ request: Inferwire_V1_InferRequest, iterations: Int)
        async throws -> Latency
    {
        var histogram = Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
        for i in 0..<(iterations + iterations / 10) {
            let start = ContinuousClock.now
            _ = try await client.infer(request)
            if i >= iterations / 10 { record(&histogram, since: start) }
        }
        return summary(histogram)
    }

    /// Keeps `inFlight` requests outstanding on one connection. Each `recv` takes whatever
    /// answers have arrived (parsing every whole frame in it) and one `send` replaces them
    /// all, so the generator spends a few syscalls per burst rather than three per request
    /// and is not what limits the measurement. Request ids cycle so none is reused in flight.
    static func pipelined(
        _ socket: BlockingSocket, _ frame: [UInt8], inFlight: Int, seconds: Double,
        scratch: UnsafeMutableRawBufferPointer
    ) throws -> Double {
        var nextID: UInt32 = 1
        var outgoing: [UInt8] = []
        func queue(_ count: Int) {
            for _ in 0..<count {
                let offset = outgoing.count
                outgoing += frame
                outgoing.withUnsafeMutableBytes {
                    $0.storeBytes(of: nextID.bigEndian, toByteOffset: offset + 8, as: UInt32.self)
                }
                nextID = nextID % 1_000_000 + 1
            }
        }
        queue(inFlight)
        try socket.sendAll(outgoing)
        var pending = [UInt8]()  // bytes of a frame split across reads
        var completed = 0
        var outstanding = inFlight
        /// Reads once; returns how many whole frames arrived.
        func receiveSome() throws -> Int {
            let n = recv(socket.fd, scratch.baseAddress!, scratch.count, 0)
            guard n > 0 else { throw BenchError("recv failed or peer closed") }
            pending += UnsafeRawBufferPointer(rebasing: scratch[..<n])
            var offset = 0
            var frames = 0
            while pending.count - offset >= 16 {
                let length =
                    Int(pending[offset]) << 24 | Int(pending[offset + 1]) << 16 | Int(pending[offset + 2]) << 8
                    | Int(pending[offset + 3])
                guard pending.count - offset >= 16 + length else { break }
                guard
                    pending[offset + 4] == FrameType.response.rawValue
                        || pending[offset + 4] == FrameType.request.rawValue
                else {
                    throw BenchError("server answered frame type \(pending[offset + 4])")
                }
                offset += 16 + length
                frames += 1
            }
            pending.removeFirst(offset)
            return frames
        }
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < end {
            let arrived = try receiveSome()
            completed += arrived
            outstanding -= arrived
            outgoing.removeAll(keepingCapacity: true)
            queue(arrived)
            outstanding += arrived
            if !outgoing.isEmpty { try socket.sendAll(outgoing) }
        }
        let elapsed = ContinuousClock.now - start
        while outstanding > 0 { outstanding -= try receiveSome() }
        return Double(completed) / elapsed.inSeconds
    }

    /// One closed-loop level of the load generator: 20% warm-up, then one window.
    static func generatorLevel(_ generator: LoadGenerator, concurrency: Int, seconds: Double) async throws
        -> LevelResult
    {
        let settings = MeasurementSettings(
            warmup: .milliseconds(Int64(seconds * 200)), window: .milliseconds(Int64(seconds * 1000)), maxWindows: 1)
        let result = try await LevelRunner(generator: generator, settings: settings).run(
            .closed(concurrency: concurrency))
        guard result.errors.isEmpty else { throw BenchError("generator saw errors: \(result.errors)") }
        return result
    }

    static func asyncConcurrent(
        _ client: InferWireClient, _ request: Inferwire_V1_InferRequest, inFlight: Int, seconds: Double
    ) async throws -> Double {
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        let completed = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<inFlight {
                group.addTask {
                    var n = 0
                    while ContinuousClock.now < end {
                        _ = try await client.infer(request)
                        n += 1
                    }
                    return n
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = ContinuousClock.now - start
        return Double(completed) / elapsed.inSeconds
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted.count % 2 == 1
        ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
