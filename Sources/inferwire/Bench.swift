import ArgumentParser
import Foundation
import InferWireBench
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireProto

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load a model and report throughput, latency percentiles, errors and the server's own times.",
        discussion: """
            Closed loop (default): --concurrency callers each send the next request as soon as the last is answered. Each level warms up, then measures windows until the last three agree within --tolerance, or --max-windows is reached; the table says which. With --requests N each level runs until N answers are in.

            Open loop: --rate R (or FROM:TO:STEP) sends on a schedule, evenly spaced or --poisson, whatever is in flight. Latency counts from when each request was due, so a stall cannot hide. Late and skipped sends are counted: above 1% the generator, not the server, set the pace.

            Inputs are random, shaped from the model's metadata (--batch rows where the batch is dynamic), or read with --input NAME=@file.npy, NAME=@file.json or NAME='[[...]]'.

            Rollout under load: --during "promote fraud" --at 10 runs the management action 10 s into the first level's measurement and reports errors and p99 in the seconds before and after it. Actions: promote M, rollback M, load M V, unload M V, traffic M V PERCENT, shadow M V PERCENT.

            Several servers (--server a:8500,b:8500, repeated --server, dns:///NAME:PORT, or a name with several addresses): requests go through the balancing client, one connection per server, each request to the server with fewer in flight of two drawn at random, and retried on another server when it did not complete (--no-retries: only requests never sent go elsewhere). Errors count each request once, by its final outcome; the attempts and retries are reported after the levels. --during then acts on one of the servers.

            Is the generator the bottleneck? Each level reports the CPU the generator used ("gen cores"). When it nears the number of event loops it runs on (one per connection, up to the core count), or throughput stops rising while the server's queue time stays near zero, the client is the limit: add --connections, or run the generator on another machine.
            """)

    @Option(
        name: .customLong("server"),
        help: ArgumentHelp(
            "Server address HOST:PORT; repeat it or separate with commas (or dns:///NAME:PORT) to load a fleet through the balancing client.",
            valueName: "address"))
    var servers: [String] = ["127.0.0.1:8500"]

    @Flag(help: "With several servers: send each request once; only requests never sent go to another server.")
    var noRetries = false

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

    @Option(help: "Open loop: seed of the Poisson arrivals (the same seed repeats the same schedule).")
    var seed: UInt64 = 0x9E37_79B9_7F4A_7C15

    @Option(help: "Open loop: seconds measured per rate.")
    var duration = 5.0

    @Option(help: "Open loop: most requests in flight before sends are skipped (and counted).")
    var maxInFlight = 4096

    @Option(help: "Connections per server.")
    var connections = 1

    @Option(help: "Seconds of warm-up per level, not counted.")
    var warmup = 1.0

    @Option(help: "Seconds per measurement window.")
    var window = 1.0

    @Option(help: "Most windows per level (closed loop).")
    var maxWindows = 10

    @Option(help: "Windows agree when within this fraction of their mean throughput.")
    var tolerance = 0.10

    @Option(
        help:
            "Closed loop: measure each level until this many requests are answered, instead of until the windows settle."
    )
    var requests: Int?

    @Flag(help: "Compress requests and responses.")
    var compress = false

    @Option(
        name: .customLong("input"),
        help: "NAME=@FILE.npy, NAME=@FILE.json or NAME=JSON, once per input (default: random).")
    var inputs: [String] = []

    @Option(help: "Rows per request for random inputs when the batch dimension is dynamic.")
    var batch = 1

    @Option(help: "A management action to run under load, e.g. \"promote fraud\".")
    var during: String?

    @Option(help: "Seconds into the measurement at which --during runs.")
    var at = 5.0

    @Option(help: "Seconds measured after --during before the level ends.")
    var after = 5.0

    @Option(help: "Write every level as JSON to this file.")
    var json: String?

    @Option(help: "Write every level as CSV to this file.")
    var csv: String?

    @Option(help: "Write a self-contained HTML report (charts, tables) to this file.")
    var report: String?

    @OptionGroup var security: ClientSecurityOptions

    @Flag(help: "No live progress line.")
    var quiet = false

    func validate() throws {
        if self.version != nil && self.label != nil { throw ValidationError("give --version or --label, not both") }
        guard self.connections >= 1, self.connections <= 1024 else {
            throw ValidationError("--connections must be 1…1024")
        }
        // Seconds: finite, at least a millisecond where zero makes no sense, at most a day.
        let day = 86_400.0
        guard (0.001...day).contains(self.window), (0.001...day).contains(self.duration),
            (0...day).contains(self.warmup),
            (0...day).contains(self.at), (0.001...day).contains(self.after)
        else {
            throw ValidationError(
                "--window, --duration and --after take 0.001…86400 seconds; --warmup and --at 0…86400")
        }
        guard self.maxWindows >= 1, self.maxWindows <= 100_000, self.tolerance > 0, self.tolerance.isFinite else {
            throw ValidationError("--max-windows must be 1…100000 and --tolerance positive")
        }
        // Every window is kept for the report: bound how many one level can have.
        let windows =
            self.during != nil
            ? (self.at + self.after) / self.window : self.rate != nil ? self.duration / self.window : 0
        guard windows <= 100_000 else {
            throw ValidationError("that is \(Int(windows)) windows in one level; use a longer --window")
        }
        if let requests = self.requests {
            guard requests >= 1 else { throw ValidationError("--requests must be positive") }
            guard self.rate == nil, self.during == nil else {
                throw ValidationError("--requests measures closed-loop levels; not with --rate or --during")
            }
            let top = self.concurrencyLevels.compactMap { $0 }.max() ?? 1
            guard requests >= top else {
                throw ValidationError("--requests must be at least the largest --concurrency (\(top))")
            }
        }
        guard self.batch >= 1, self.maxInFlight >= 1 else {
            throw ValidationError("--batch and --max-in-flight must be positive")
        }
        if let during = self.during {
            do { _ = try ManagementAction(parsing: during) } catch { throw ValidationError(error.message) }
        }
    }

    func run() async throws {
        do {
            try await self.measure()
        } catch let error as InferWireError {
            FileHandle.standardError.write(Data("error: \(error.code): \(error.message)\n".utf8))
            throw ExitCode(Int32(error.code.rawValue))
        }
    }

    func measure() async throws {
        let levels = try self.levels()
        if case .fleet(let target) = try await serverChoice(self.servers) {
            try await self.measureFleet(target, levels: levels)
            return
        }
        let addresses = try self.servers.map { try parseAddress($0) }
        // Control connections (metadata, statistics, actions) are separate from the load.
        var controls: [(String, InferWireClient)] = []
        do {
            for (server, address) in zip(self.servers, addresses) {
                controls.append(
                    (
                        server,
                        try await InferWireClient.connect(
                            host: address.0, port: address.1, configuration: self.security.configuration())
                    ))
            }
            try await self.measure(levels: levels, addresses: addresses, controls: controls)
        } catch {
            for (_, client) in controls { await client.close() }
            throw error
        }
        for (_, client) in controls { await client.close() }
    }

    /// Runs every level against the servers, with `controls` for metadata, statistics and actions.
    func measure(
        levels: [LoadLevel], addresses: [(String, Int)], controls: [(String, InferWireClient)]
    ) async throws {
        let metadata = try await controls[0].1.modelMetadata(self.model, version: self.version, label: self.label)
        let generator = try await LoadGenerator.connect(
            servers: addresses.map { (host: $0.0, port: $0.1) }, connectionsPerServer: self.connections,
            model: self.model, version: self.version, label: self.label, inputs: try self.inputTensors(metadata),
            compression: self.compress, security: try self.security.connectionSecurity())
        let limit = generator.serverConcurrencyLimit
        if limit > 0, case .closed(let top) = levels.last!, top > limit * generator.connectionCount {
            print(
                "note: the server allows \(limit) requests in flight per connection; levels above \(limit * generator.connectionCount) are capped (use --connections)"
            )
        }

        let model = self.model
        let counters: @Sendable () async -> [String: ServerTimes.Counters]? = { [controls] in
            var all: [String: ServerTimes.Counters] = [:]
            for (server, client) in controls {
                guard let stats = try? await client.modelStatistics(model) else { return nil }
                for v in stats {
                    all["\(server)/\(v.version)"] = .init(
                        requests: v.requestCount, executions: v.executionCount,
                        queueMicros: UInt64(max(0, v.queueTime.inMicroseconds)),
                        computeMicros: UInt64(max(0, v.computeTime.inMicroseconds)))
                }
            }
            return all
        }
        let progress = ProgressLine(enabled: !self.quiet)
        let runner = LevelRunner(generator: generator, settings: self.settings, serverCounters: counters) {
            level, window in
            progress.update(level: level, window: window)
        }
        let action = try self.during.map { try self.action($0, client: controls[0].1) }

        let target = self.version.map { "version \($0)" } ?? self.label.map { "label \($0)" } ?? ""
        print(
            "model \(self.model)\(target.isEmpty ? "" : " (\(target))"), \(generator.connectionCount) connection(s) to \(self.servers.joined(separator: ", "))"
                + (self.rate != nil
                    ? ", open loop (\(self.poisson ? "Poisson" : "constant") arrivals), latency from the intended send time"
                    : ""))
        print(Self.header)
        var results: [LevelResult] = []
        for (i, level) in levels.enumerated() {
            let r = try await runner.run(level, action: i == 0 ? action : nil)
            progress.clear()
            results.append(r)
            print(self.row(r))
        }
        for reason in await generator.refusals() { print("connection lost: \(reason)") }
        await generator.close()
        self.printNotes(results)

        let report = BenchReport(
            model: self.model, target: target, servers: self.servers, connections: generator.connectionCount,
            compression: self.compress,
            startedAt: ISO8601DateFormatter().string(from: Date()), levels: results)
        try self.write(report)
    }

    /// Every level against a fleet, through the balancing client; a second balancing client
    /// asks for metadata, statistics (of every server) and runs --during.
    func measureFleet(_ target: BalancedClient.Target, levels: [LoadLevel]) async throws {
        let connection = self.security.configuration(compression: self.compress)
        let configuration = BalancedClient.Configuration(
            connection: connection, retries: self.noRetries ? .disabled : .defaults)
        let control = try await BalancedClient.connect(
            to: target, configuration: .init(connection: self.security.configuration()))
        let load: BalancedClient
        do {
            load = try await BalancedClient.connect(to: target, configuration: configuration)
        } catch {
            await control.close()
            throw error
        }
        do {
            try await self.measureFleet(levels: levels, load: load, control: control)
        } catch {
            await load.close()
            await control.close()
            throw error
        }
        await load.close()
        await control.close()
    }

    func measureFleet(levels: [LoadLevel], load: BalancedClient, control: BalancedClient) async throws {
        let metadata = try await control.modelMetadata(self.model, version: self.version, label: self.label)
        let generator = BalancedLoadGenerator(
            client: load, model: self.model, version: self.version, label: self.label,
            inputs: try self.inputTensors(metadata))
        let model = self.model
        let counters: @Sendable () async -> [String: ServerTimes.Counters]? = {
            var all: [String: ServerTimes.Counters] = [:]
            for (endpoint, client) in await control.endpointClients() {
                guard let stats = try? await client.modelStatistics(model) else { return nil }
                for v in stats {
                    all["\(endpoint)/\(v.version)"] = .init(
                        requests: v.requestCount, executions: v.executionCount,
                        queueMicros: UInt64(max(0, v.queueTime.inMicroseconds)),
                        computeMicros: UInt64(max(0, v.computeTime.inMicroseconds)))
                }
            }
            return all
        }
        let progress = ProgressLine(enabled: !self.quiet)
        let runner = LevelRunner(generator: generator, settings: self.settings, serverCounters: counters) {
            level, window in progress.update(level: level, window: window)
        }
        let action = try self.during.map { try self.action($0, client: control) }
        let target = self.version.map { "version \($0)" } ?? self.label.map { "label \($0)" } ?? ""
        let servers = load.endpoints.map(\.description)
        if self.connections > 1 {
            print("note: --connections applies to one server; the balancing client keeps one connection per server")
        }
        print(
            "model \(self.model)\(target.isEmpty ? "" : " (\(target))"), balanced over \(servers.count) server(s) (\(load.target)), power of two choices, retries \(self.noRetries ? "off" : "on")"
                + (self.rate != nil
                    ? ", open loop (\(self.poisson ? "Poisson" : "constant") arrivals), latency from the intended send time"
                    : ""))
        print(Self.header)
        var results: [LevelResult] = []
        for (i, level) in levels.enumerated() {
            let r = try await runner.run(level, action: i == 0 ? action : nil)
            progress.clear()
            results.append(r)
            print(self.row(r))
        }
        let statistics = load.statistics
        print("balancing: \(statistics.attempts) attempts, \(statistics.retries) retries")
        for e in statistics.endpoints {
            print(
                "  \(e.endpoint)\(e.isDraining ? " (gone from the name)" : ""): \(e.attempts) attempts, \(e.connectFailures) failed connects"
                    + (e.lastConnectFailure.map { " (last: \($0))" } ?? ""))
        }
        self.printNotes(results)
        let report = BenchReport(
            model: self.model, target: target, servers: servers, connections: servers.count,
            compression: self.compress,
            startedAt: ISO8601DateFormatter().string(from: Date()), levels: results)
        try self.write(report)
    }

    /// The measurement settings from the command line.
    var settings: MeasurementSettings {
        MeasurementSettings(
            warmup: seconds(self.warmup), window: seconds(self.window), maxWindows: self.maxWindows,
            rule: StabilityRule(windows: 3, tolerance: self.tolerance), openDuration: seconds(self.duration),
            maxInFlight: self.maxInFlight, seed: self.seed, requestCount: self.requests)
    }

    static let header =
        "level               req/s    p50 µs    p90 µs    p99 µs  p99.9 µs    max µs   errors  server queue/compute µs  gen cores  ended"

    /// --concurrency split at commas; nil where an entry is not a number.
    var concurrencyLevels: [Int?] {
        self.concurrency.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
    }

    func levels() throws -> [LoadLevel] {
        if let rate = self.rate {
            let parts = rate.split(separator: ":").map { Double($0) }
            guard parts.allSatisfy({ $0 != nil }) else {
                throw ValidationError("--rate takes R or FROM:TO:STEP, e.g. 1000:20000:1000")
            }
            let numbers = parts.compactMap { $0 }
            let rates: [Double]
            switch numbers.count {
            case 1: rates = numbers
            case 3 where numbers[2] > 0 && numbers[0] <= numbers[1] && (numbers[1] - numbers[0]) / numbers[2] <= 1000:
                rates = Array(stride(from: numbers[0], through: numbers[1], by: numbers[2]))
            default: throw ValidationError("--rate takes R or FROM:TO:STEP (at most 1000 steps), e.g. 1000:20000:1000")
            }
            guard rates.allSatisfy({ $0 > 0 && $0 <= 10_000_000 }) else {
                throw ValidationError("--rate must be within 0…10,000,000 req/s")
            }
            return rates.map { .open(rate: $0, poisson: self.poisson) }
        }
        let levels = self.concurrencyLevels
        guard !levels.isEmpty, levels.allSatisfy({ ($0 ?? 0) > 0 && ($0 ?? 0) <= 100_000 }) else {
            throw ValidationError("--concurrency takes positive integers up to 100000, e.g. 1,8,64")
        }
        return levels.map { .closed(concurrency: $0!) }
    }

    /// The request's inputs: from --input where given, random (shaped from the metadata) elsewhere.
    func inputTensors(_ metadata: ModelMetadata) throws -> [Tensor] {
        var given: [String: Tensor] = [:]
        for argument in self.inputs {
            guard let equals = argument.firstIndex(of: "=") else {
                throw ValidationError("--input must be NAME=@FILE or NAME=JSON, got '\(argument)'")
            }
            let name = String(argument[..<equals])
            let value = argument[argument.index(after: equals)...]
            if value.hasPrefix("@") {
                let path = String(value.dropFirst())
                guard let contents = FileManager.default.contents(atPath: path) else {
                    throw InferWireError(code: .invalidArgument, message: "--input \(name): cannot read \(path)")
                }
                if path.hasSuffix(".npy") {
                    let tensor = try NumpyFile.tensor(name: name, contents: contents)
                    guard let spec = metadata.inputs.first(where: { $0.name == name }) else {
                        throw InferWireError(
                            code: .invalidArgument, message: "model '\(metadata.name)' has no input '\(name)'")
                    }
                    guard tensor.dataType == spec.dataType else {
                        throw InferWireError(
                            code: .invalidArgument,
                            message:
                                "--input \(name): \(path) holds \(tensor.dataType.name), the model takes \(spec.dataType.name)"
                        )
                    }
                    given[name] = tensor
                } else {
                    given[name] = try parseInput(
                        "\(name)=\(String(decoding: contents, as: UTF8.self))", metadata: metadata)
                }
            } else {
                given[name] = try parseInput(argument, metadata: metadata)
            }
        }
        return try metadata.inputs.map { spec in
            if let tensor = given[spec.name] { return tensor }
            var spec = spec
            if metadata.maxBatchSize > 0, let first = spec.shape.first, first < 0 { spec.shape[0] = self.batch }
            return try randomTensor(spec)
        }
    }

    /// Parses `--during` into a call on the control connection.
    func action(_ text: String, client: any InferWireClientProtocol) throws -> ScheduledAction {
        let action = try ManagementAction(parsing: text)
        return ScheduledAction(name: text, at: seconds(self.at), after: seconds(self.after)) {
            try await action.run(on: client)
        }
    }

    func row(_ r: LevelResult) -> String {
        let server = r.server.map { String(format: "%.1f / %.1f", $0.queueMicros, $0.computeMicros) } ?? "–"
        return String(
            format: "%-15@ %9.0f %9.1f %9.1f %9.1f %9.1f %9.1f %8llu  %23@  %9.2f  %@",
            r.label as NSString, r.throughput, r.latency.p50, r.latency.p90, r.latency.p99, r.latency.p999,
            r.latency.max,
            r.errorCount, server as NSString, r.generatorCores, r.ending as NSString)
    }

    func printNotes(_ results: [LevelResult]) {
        for r in results {
            if !r.errors.isEmpty {
                print(
                    "\(r.label): errors "
                        + r.errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            }
            if r.versions.count > 1 {
                print(
                    "\(r.label): answered by "
                        + r.versions.sorted { $0.key < $1.key }.map { "v\($0.key) \($0.value)" }.joined(separator: ", ")
                )
            }
            if r.generatorBound && r.mode == "closed" {
                print(
                    "\(r.label): the generator used \(String(format: "%.2f", r.generatorCores)) cores on \(r.generatorLoops) event loop(s): it may be the bottleneck (add --connections)"
                )
            }
            if r.mode == "open" && !r.stable {
                print(
                    "\(r.label): the generator fell behind the asked rate (\(r.late) late, \(r.skipped) not sent of \(r.due)): these figures understate the load"
                )
            }
            for e in r.events {
                print(
                    String(
                        format: "%@ at %.1f s (took %.1f ms): %@", e.action as NSString, e.at, e.tookMicros / 1000,
                        e.outcome as NSString))
                print(
                    String(
                        format: "  %.1f s before: %llu requests, %llu errors, p99 %.1f µs", e.before.seconds,
                        e.before.requests, e.before.errors, e.before.p99))
                print(
                    String(
                        format: "  %.1f s after:  %llu requests, %llu errors, p99 %.1f µs", e.after.seconds,
                        e.after.requests, e.after.errors, e.after.p99))
            }
        }
    }

    func write(_ report: BenchReport) throws {
        if let json = self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
        if let csv = self.csv { try report.csv.write(toFile: csv, atomically: true, encoding: .utf8) }
        if let path = self.report {
            try HTMLReport.render(report).write(toFile: path, atomically: true, encoding: .utf8)
        }
    }
}

/// A validated number of seconds as a Duration (nanosecond precision).
private func seconds(_ value: Double) -> Duration { .nanoseconds(Int64(value * 1e9)) }

/// The live view: one line rewritten in place on a terminal (stderr), plain lines otherwise.
final class ProgressLine: Sendable {
    let enabled: Bool
    let terminal: Bool

    init(enabled: Bool) {
        self.enabled = enabled
        self.terminal = isatty(STDERR_FILENO) == 1
    }

    func update(level: LoadLevel, window: WindowSample) {
        guard self.enabled else { return }
        var line = String(
            format: "[%@] %@%.0f req/s  p50 %.1f µs  p99 %.1f µs  errors %llu",
            level.label as NSString, window.warmup ? "warm-up " as NSString : "" as NSString, window.throughput,
            window.p50, window.p99, window.errors)
        if let server = window.server, server.requests > 0 {
            line += String(format: "  server %.1f + %.1f µs", server.queueMicros, server.computeMicros)
        }
        if window.late + window.skipped > 0 { line += "  late \(window.late) skipped \(window.skipped)" }
        FileHandle.standardError.write(Data((self.terminal ? "\r\u{1B}[2K" + line : line + "\n").utf8))
    }

    func clear() {
        guard self.enabled, self.terminal else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
    }
}
