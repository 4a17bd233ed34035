import ArgumentParser
import Foundation
import InferWireBench
import InferWireClient
import InferWireCore
import InferWireProto

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load a model at one or more concurrency levels and report throughput and latency percentiles.",
        discussion: """
            Closed loop: each of --concurrency callers sends its next request as soon as the last is answered.
            Each level warms up, then measures windows until the last three agree within --tolerance, or
            --max-windows is reached (the report says which). Inputs are random, shaped from the model's metadata.
            The client itself costs ≈ 40–90 µs a round trip on these machines: when throughput stops rising
            with concurrency while the server's own statistics (inferwire models status) show short queue and
            compute times, the client, not the server, is the limit — add --connections or run more generators.
            """)

    @Option(name: .customLong("server"), help: "Server address HOST:PORT (repeat for round-robin over servers).")
    var servers: [String] = ["127.0.0.1:8500"]

    @Option(help: "Model name.")
    var model: String

    @Option(help: "Exact model version.")
    var version: Int64?

    @Option(help: "Version label: stable or canary.")
    var label: String?

    @Option(help: "Concurrency levels, comma-separated.")
    var concurrency = "1,8,64"

    @Option(help: "Connections per server.")
    var connections = 1

    @Option(help: "Seconds of warm-up per level, not counted.")
    var warmup = 1.0

    @Option(help: "Seconds per measurement window.")
    var window = 1.0

    @Option(help: "Most windows per level.")
    var maxWindows = 10

    @Option(help: "Windows agree when within this fraction of their mean throughput.")
    var tolerance = 0.10

    @Flag(help: "Compress requests and responses.")
    var compress = false

    @Option(help: "Write every level as JSON to this file.")
    var json: String?

    @Option(help: "Write every level as CSV to this file.")
    var csv: String?

    func run() async throws {
        let levels = self.concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !levels.isEmpty, levels.allSatisfy({ $0 > 0 }) else { throw ValidationError("--concurrency takes positive integers, e.g. 1,8,64") }
        var clients: [InferWireClient] = []
        for server in self.servers {
            let (host, port) = try parseAddress(server)
            for _ in 0..<max(1, self.connections) {
                clients.append(try await InferWireClient.connect(host: host, port: port, configuration: .init(compression: self.compress)))
            }
        }
        let metadata = try await clients[0].modelMetadata(self.model, version: self.version, label: self.label)
        var request = Inferwire_V1_InferRequest()
        request.modelName = self.model
        if let version = self.version { request.version.version = version } else if let label = self.label { request.version.label = label }
        request.inputs = try metadata.inputs.map { try randomTensor($0).wire }

        let loop = ClosedLoop(
            request: request, warmup: .milliseconds(Int(self.warmup * 1000)), window: .milliseconds(Int(self.window * 1000)),
            maxWindows: self.maxWindows, rule: StabilityRule(windows: 3, tolerance: self.tolerance))
        print("model \(self.model), \(clients.count) connection(s) to \(self.servers.joined(separator: ", "))")
        print("concurrency    req/s      p50 µs    p90 µs    p99 µs  p99.9 µs    max µs   errors  windows")
        var results: [LevelResult] = []
        for level in levels {
            let r = try await loop.run(concurrency: level, clients: clients)
            results.append(r)
            let errors = r.errors.values.reduce(0, +)
            print(String(format: "%11d %8.0f %11.1f %9.1f %9.1f %9.1f %9.1f %8llu  %d%@",
                         level, r.throughput, r.latency.p50, r.latency.p90, r.latency.p99, r.latency.p999, r.latency.max,
                         errors, r.windowThroughputs.count, r.stable ? " stable" : " (not settled)"))
        }
        for client in clients { await client.close() }
        let report = BenchReport(model: self.model, servers: self.servers, levels: results)
        if let json = self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
        if let csv = self.csv { try report.csv.write(toFile: csv, atomically: true, encoding: .utf8) }
    }
}
