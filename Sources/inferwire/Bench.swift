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

    @Option(help: "Concurrency levels, comma-separated (closed loop).")
    var concurrency = "1,8,64"

    @Option(help: "Open loop instead: requests per second, or a sweep FROM:TO:STEP.")
    var rate: String?

    @Flag(help: "Open loop: Poisson arrivals instead of evenly spaced ones.")
    var poisson = false

    @Option(help: "Open loop: seconds measured per rate.")
    var duration = 5.0

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

        if let rate = self.rate {
            try await self.openLoop(rate: rate, request: request, clients: clients)
            for client in clients { await client.close() }
            return
        }

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
        try self.write(BenchReport(model: self.model, servers: self.servers, levels: results))
    }

    func write(_ report: BenchReport) throws {
        if let json = self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
        if let csv = self.csv { try report.csv.write(toFile: csv, atomically: true, encoding: .utf8) }
    }

    /// Open-loop levels: each rate for --duration after --warmup; latency from the intended send time.
    func openLoop(rate: String, request: Inferwire_V1_InferRequest, clients: [InferWireClient]) async throws {
        let parts = rate.split(separator: ":").compactMap { Double($0) }
        let rates: [Double]
        switch parts.count {
        case 1: rates = [parts[0]]
        case 3 where parts[2] > 0 && parts[0] <= parts[1]: rates = Array(stride(from: parts[0], through: parts[1], by: parts[2]))
        default: throw ValidationError("--rate takes R or FROM:TO:STEP, e.g. 1000:20000:1000")
        }
        guard rates.allSatisfy({ $0 > 0 }) else { throw ValidationError("--rate must be positive") }
        let loop = OpenLoop(
            request: request, warmup: .milliseconds(Int(self.warmup * 1000)), duration: .milliseconds(Int(self.duration * 1000)))
        print("model \(self.model), open loop (\(self.poisson ? "Poisson" : "constant") arrivals), latency from the intended send time")
        print("asked req/s   got req/s    p50 µs    p90 µs    p99 µs  p99.9 µs    max µs   errors  late  skipped")
        var results: [LevelResult] = []
        for r in rates {
            let outcome = try await loop.run(rate: r, poisson: self.poisson, clients: clients)
            let l = outcome.result
            print(String(format: "%11.0f %11.0f %9.1f %9.1f %9.1f %9.1f %9.1f %8llu %5llu %8llu",
                         r, l.throughput, l.latency.p50, l.latency.p90, l.latency.p99, l.latency.p999, l.latency.max,
                         l.errors.values.reduce(0, +), outcome.lateSends, outcome.skipped))
            // More than 1% of sends late or skipped: the generator, not the server, set the pace.
            if (outcome.lateSends + outcome.skipped) * 100 > outcome.due {
                print("  the generator fell behind the asked rate (\(outcome.lateSends) late, \(outcome.skipped) not sent): these figures understate the load")
            }
            results.append(l)
        }
        try self.write(BenchReport(model: self.model, servers: self.servers, levels: results))
    }
}
