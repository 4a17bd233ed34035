import ArgumentParser
import Foundation
import InferWireBench
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import InferWireServer

/// What metrics cost on the request path: two servers alike but for request metrics (end-to-end
/// request timing, byte and in-flight counting), measured in interleaved rounds: the Swift
/// client's p50 at 1 in flight and the load generator's req/s at 64 in flight. Also the time
/// one scrape takes to build the exposition.
struct MetricsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics",
        abstract: "Request metrics on next to off: latency at 1 in flight, throughput at 64, scrape cost.")

    @Option(help: "Model repository holding the identity and mlp models.")
    var repository = "examples/models"

    @Option(help: "Interleaved rounds; medians across rounds are reported.")
    var rounds = 7

    @Option(help: "Round trips per latency measurement.")
    var iterations = 5000

    @Option(help: "Seconds per throughput measurement.")
    var seconds = 2.0

    @Option(help: "Requests in flight for the throughput measurements.")
    var inFlight = 64

    func run() async throws {
        // One registry behind both: the same model instances at the same addresses, so the
        // servers differ only in what they count.
        let contents = try ModelRepository(
            directory: self.repository, loaders: ModelRepository.builtinLoaders + [OnnxModelLoader()]
        ).loadAll(logger: benchLogger)
        let registry = ModelRegistry(contents: contents)
        let on = RequestDispatcher(registry: registry, timesRequests: true)
        let off = RequestDispatcher(registry: registry, timesRequests: false)
        var measuredServer: InferWireServer?
        let keep: (InferWireServer) -> Void = { measuredServer = $0 }
        try await withInProcessServer(dispatcher: on, ioThreads: 1, onServer: keep) { onPort in
            try await withInProcessServer(dispatcher: off, ioThreads: 1, countsTraffic: false) { offPort in
                let exporter = MetricsExporter(
                    dispatcher: on, manager: nil, listeners: [("inference", measuredServer!)])
                try await self.measure(onPort: onPort, offPort: offPort, exporter: exporter)
            }
        }
    }

    func measure(onPort: Int, offPort: Int, exporter: MetricsExporter) async throws {
        let models: [(name: String, tensor: Tensor)] = [
            ("identity", Tensor(name: "INPUT0", values: (0..<16).map { Float($0) }, shape: [1, 16])),
            ("mlp", Tensor(name: "X", values: [Float](repeating: 0.5, count: 32), shape: [1, 32])),
        ]
        print("InferWire request metrics on vs off; one I/O thread per server")
        print(
            "\(self.rounds) interleaved rounds (order alternating) × \(self.iterations) round trips; throughput \(self.seconds) s at \(self.inFlight) in flight\n"
        )
        print("model       metrics   p50 µs   p99 µs  req/s @\(self.inFlight)    p50 ×   req/s ×")
        for model in models {
            var request = Inferwire_V1_InferRequest()
            request.modelName = model.name
            request.inputs = [model.tensor.wire]
            let ports = [onPort, offPort]
            var clients: [InferWireClient] = []
            var generators: [LoadGenerator] = []
            for port in ports {
                clients.append(try await InferWireClient.connect(host: "127.0.0.1", port: port))
                generators.append(
                    try await LoadGenerator.connect(
                        servers: [("127.0.0.1", port)], connectionsPerServer: 1, request: request, compression: false))
            }
            var p50 = [[Double]](repeating: [], count: 2)
            var p99 = [[Double]](repeating: [], count: 2)
            var rate = [[Double]](repeating: [], count: 2)
            var p50Ratios: [Double] = []
            var rateRatios: [Double] = []
            for round in 0..<self.rounds {
                let order = round % 2 == 0 ? [0, 1] : [1, 0]
                for index in order {
                    let latency = try await WireBench.asyncPingPong(
                        clients[index], request, iterations: self.iterations)
                    p50[index].append(latency.p50)
                    p99[index].append(latency.p99)
                }
                for index in order {
                    rate[index].append(
                        try await WireBench.generatorLevel(
                            generators[index], concurrency: self.inFlight, seconds: self.seconds
                        ).throughput)
                }
                p50Ratios.append(p50[0].last! / p50[1].last!)
                rateRatios.append(rate[0].last! / rate[1].last!)
            }
            for client in clients { await client.close() }
            for generator in generators { await generator.close() }
            for (index, label) in ["on", "off"].enumerated() {
                let ratios = index == 0 ? String(format: "%7.3f× %8.3f×", median(p50Ratios), median(rateRatios)) : ""
                print(
                    model.name.padding(toLength: 12, withPad: " ", startingAt: 0)
                        + label.padding(toLength: 7, withPad: " ", startingAt: 0)
                        + String(
                            format: "%8.1f %8.1f %11.0f   ", median(p50[index]), median(p99[index]), median(rate[index])
                        )
                        + ratios)
            }
            print(
                "  per-round on/off: p50 " + p50Ratios.map { String(format: "%.3f", $0) }.joined(separator: " ")
                    + "; req/s " + rateRatios.map { String(format: "%.3f", $0) }.joined(separator: " "))
        }

        var scrapes: [Double] = []
        var bytes = 0
        for _ in 0..<50 {
            let start = ContinuousClock.now
            bytes = exporter.exposition().utf8.count
            scrapes.append(Double((ContinuousClock.now - start).inNanoseconds) / 1000)
        }
        print(
            String(
                format: "\none scrape: %.0f µs median for %d bytes of exposition (the bundled models)", median(scrapes),
                bytes))
    }
}
