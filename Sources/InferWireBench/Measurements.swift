import Foundation
public import Histogram

/// What the generator's connections measured between two collections.
public struct WindowTally: Sendable {
    /// Round-trip times of successful requests, nanoseconds from the intended send time.
    public var histogram = makeLatencyHistogram()
    public var ok: UInt64 = 0
    /// Failed requests by status code name.
    public var errors: [String: UInt64] = [:]
    /// Successful requests by the model version that answered.
    public var versions: [Int64: UInt64] = [:]
    /// Open loop: sends that fell due, sends made more than 1 ms after they were due, and
    /// sends dropped because the in-flight cap was reached.
    public var due: UInt64 = 0
    public var late: UInt64 = 0
    public var skipped: UInt64 = 0

    public init() {}

    public var errorCount: UInt64 { self.errors.values.reduce(0, +) }

    public mutating func merge(_ other: WindowTally) {
        self.histogram.add(other.histogram)
        self.ok += other.ok
        for (code, n) in other.errors { self.errors[code, default: 0] += n }
        for (version, n) in other.versions { self.versions[version, default: 0] += n }
        self.due += other.due
        self.late += other.late
        self.skipped += other.skipped
    }
}

/// Latency percentiles of one measurement, in microseconds.
public struct LatencySummary: Codable, Sendable, Equatable {
    public var count: UInt64
    public var p50: Double
    public var p90: Double
    public var p95: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
    public var mean: Double

    /// Summarises a histogram of nanoseconds.
    public init(_ histogram: Histogram<UInt64>) {
        guard histogram.totalCount > 0 else {
            self.count = 0
            (self.p50, self.p90, self.p95, self.p99, self.p999, self.max, self.mean) = (0, 0, 0, 0, 0, 0, 0)
            return
        }
        func micros(_ percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1000 }
        self.count = histogram.totalCount
        self.p50 = micros(50)
        self.p90 = micros(90)
        self.p95 = micros(95)
        self.p99 = micros(99)
        self.p999 = micros(99.9)
        self.max = Double(histogram.max) / 1000
        self.mean = histogram.mean / 1000
    }
}

/// The longest round trip a latency histogram holds: 100 s. Longer ones are recorded as this.
public let latencyCeilingNanos: UInt64 = 100_000_000_000

/// A histogram of round-trip times in nanoseconds, 3 significant digits, up to 100 s.
public func makeLatencyHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(highestTrackableValue: latencyCeilingNanos, numberOfSignificantValueDigits: .three)
}

/// Decides when a load level has settled: the last `windows` measurement windows agree
/// within `tolerance` of their mean throughput.
public struct StabilityRule: Sendable, Equatable {
    public var windows: Int
    public var tolerance: Double

    public init(windows: Int = 3, tolerance: Double = 0.10) {
        self.windows = windows
        self.tolerance = tolerance
    }

    /// Whether the most recent windows' throughputs (requests per second) agree.
    public func isStable(_ throughputs: [Double]) -> Bool {
        guard self.windows > 0, throughputs.count >= self.windows else { return false }
        let recent = throughputs.suffix(self.windows)
        let mean = recent.reduce(0, +) / Double(recent.count)
        guard mean > 0 else { return false }
        return recent.allSatisfy { abs($0 - mean) <= self.tolerance * mean }
    }
}

/// One measurement window of a level, for the live view and "latency over time".
public struct WindowSample: Codable, Sendable, Equatable {
    /// Seconds from the start of the run to the start of the window.
    public var start: Double
    public var seconds: Double
    /// Warm-up windows are shown but not counted in the level's figures.
    public var warmup: Bool
    public var requests: UInt64
    public var errors: UInt64
    /// Successful requests per second.
    public var throughput: Double
    /// Latency of the window's successful requests, µs (0 when there were none).
    public var p50: Double
    public var p99: Double
    public var max: Double
    /// Open loop: sends made late or skipped in this window.
    public var late: UInt64
    public var skipped: UInt64
    /// The server's own times over this window (measured windows only, when it can be asked).
    public var server: ServerTimes?

    public init(start: Double, seconds: Double, warmup: Bool, tally: WindowTally, server: ServerTimes? = nil) {
        self.server = server
        self.start = start
        self.seconds = seconds
        self.warmup = warmup
        self.requests = tally.ok
        self.errors = tally.errorCount
        self.throughput = seconds > 0 ? Double(tally.ok) / seconds : 0
        let summary = LatencySummary(tally.histogram)
        self.p50 = summary.p50
        self.p99 = summary.p99
        self.max = summary.max
        self.late = tally.late
        self.skipped = tally.skipped
    }
}

/// What the server's own statistics say about the measured period (differences between
/// two MODEL_STATISTICS snapshots, summed over the model's versions and the servers).
public struct ServerTimes: Codable, Sendable, Equatable {
    /// Requests the server executed in the period.
    public var requests: UInt64
    /// Model executions; requests / executions is the mean batch size.
    public var executions: UInt64
    /// Mean time a request waited in the model's queue, µs.
    public var queueMicros: Double
    /// Mean time a request spent executing (its batch's run), µs.
    public var computeMicros: Double

    public init(requests: UInt64, executions: UInt64, queueMicros: Double, computeMicros: Double) {
        self.requests = requests
        self.executions = executions
        self.queueMicros = queueMicros
        self.computeMicros = computeMicros
    }

    public var meanBatchSize: Double { self.executions > 0 ? Double(self.requests) / Double(self.executions) : 0 }

    /// The change between two snapshots of cumulative counters, keyed by server and version.
    public init(from before: [String: Counters], to after: [String: Counters]) {
        var requests: UInt64 = 0
        var executions: UInt64 = 0
        var queue: UInt64 = 0
        var compute: UInt64 = 0
        for (key, b) in after {
            // A version loaded during the period starts from zero; one reloaded restarts its counters.
            let a =
                before[key].flatMap { a in
                    a.requests <= b.requests && a.executions <= b.executions && a.queueMicros <= b.queueMicros
                        && a.computeMicros <= b.computeMicros ? a : nil
                } ?? Counters()
            requests += b.requests - a.requests
            executions += b.executions - a.executions
            queue += b.queueMicros - a.queueMicros
            compute += b.computeMicros - a.computeMicros
        }
        self.requests = requests
        self.executions = executions
        self.queueMicros = requests > 0 ? Double(queue) / Double(requests) : 0
        self.computeMicros = requests > 0 ? Double(compute) / Double(requests) : 0
    }

    /// Cumulative counters of one model version on one server.
    public struct Counters: Sendable, Equatable {
        public var requests: UInt64 = 0
        public var executions: UInt64 = 0
        public var queueMicros: UInt64 = 0
        public var computeMicros: UInt64 = 0

        public init(requests: UInt64 = 0, executions: UInt64 = 0, queueMicros: UInt64 = 0, computeMicros: UInt64 = 0) {
            self.requests = requests
            self.executions = executions
            self.queueMicros = queueMicros
            self.computeMicros = computeMicros
        }
    }
}

/// Errors and p99 over a span of windows next to a management action.
public struct Span: Codable, Sendable, Equatable {
    public var seconds: Double
    public var requests: UInt64
    public var errors: UInt64
    /// µs; 0 when no request succeeded.
    public var p99: Double
    public var max: Double

    public init(seconds: Double, tally: WindowTally) {
        self.seconds = seconds
        self.requests = tally.ok
        self.errors = tally.errorCount
        let summary = LatencySummary(tally.histogram)
        self.p99 = summary.p99
        self.max = summary.max
    }
}

/// A management action run while the load ran (`--during`), and the load around it.
public struct ActionEvent: Codable, Sendable, Equatable {
    /// What was run, e.g. "promote fraud".
    public var action: String
    /// Seconds from the start of the run.
    public var at: Double
    /// How long the management call took, µs.
    public var tookMicros: Double
    public var succeeded: Bool
    /// The server's answer, or the error.
    public var outcome: String
    /// The windows that ended within `after` before the action's scheduled time, and those
    /// from the one it fell in, up to `after` later.
    public var before: Span
    public var after: Span

    public init(
        action: String, at: Double, tookMicros: Double, succeeded: Bool, outcome: String, before: Span, after: Span
    ) {
        self.action = action
        self.at = at
        self.tookMicros = tookMicros
        self.succeeded = succeeded
        self.outcome = outcome
        self.before = before
        self.after = after
    }
}

/// Everything measured at one load level.
public struct LevelResult: Codable, Sendable, Equatable {
    /// "closed" (a fixed number in flight) or "open" (a fixed arrival rate).
    public var mode: String
    /// Closed loop: requests kept in flight. Open loop: 0.
    public var concurrency: Int
    /// Open loop: the asked rate, requests per second. Closed loop: 0.
    public var askedRate: Double
    /// Requests answered (successfully or not) in the measured windows.
    public var requests: UInt64
    /// Failed requests by status code name.
    public var errors: [String: UInt64]
    /// Successful requests per second over the measured windows.
    public var throughput: Double
    public var latency: LatencySummary
    /// Every window of the level, warm-up first.
    public var windows: [WindowSample]
    /// Closed loop: the last windows agreed (see ``StabilityRule``). Open loop: the generator
    /// kept to the asked rate (at most 1% of sends late or skipped).
    public var stable: Bool
    /// Why the level ended: "stable", "window limit", "duration", "request count" or "action".
    public var stopReason: String
    /// Successful requests by the model version that answered.
    public var versions: [String: UInt64]
    /// Open loop: sends due, made late (> 1 ms), and skipped (in-flight cap).
    public var due: UInt64
    public var late: UInt64
    public var skipped: UInt64
    /// The server's own queue and compute times for the same period, when it could be asked.
    public var server: ServerTimes?
    /// CPU the generator process used while measuring, in cores (1.0 = one core busy).
    public var generatorCores: Double
    /// Event-loop threads the generator's connections ran on.
    public var generatorLoops: Int
    /// Management actions run during the level.
    public var events: [ActionEvent]

    public init(
        mode: String, concurrency: Int, askedRate: Double, requests: UInt64, errors: [String: UInt64],
        throughput: Double,
        latency: LatencySummary, windows: [WindowSample], stable: Bool, stopReason: String, versions: [String: UInt64],
        due: UInt64 = 0, late: UInt64 = 0, skipped: UInt64 = 0, server: ServerTimes? = nil, generatorCores: Double = 0,
        generatorLoops: Int = 1, events: [ActionEvent] = []
    ) {
        self.mode = mode
        self.concurrency = concurrency
        self.askedRate = askedRate
        self.requests = requests
        self.errors = errors
        self.throughput = throughput
        self.latency = latency
        self.windows = windows
        self.stable = stable
        self.stopReason = stopReason
        self.versions = versions
        self.due = due
        self.late = late
        self.skipped = skipped
        self.server = server
        self.generatorCores = generatorCores
        self.generatorLoops = generatorLoops
        self.events = events
    }

    public var errorCount: UInt64 { self.errors.values.reduce(0, +) }

    /// "64 in flight" or "5000 req/s".
    public var label: String {
        (self.mode == "open"
            ? LoadLevel.open(rate: self.askedRate, poisson: false) : .closed(concurrency: self.concurrency)).label
    }

    /// Why and how the level ended, for people: "settled, 3 windows", "fell behind: 12 late, 0 skipped", …
    public var ending: String {
        let windows = self.windows.filter { !$0.warmup }.count
        return switch (self.mode, self.stable, self.stopReason) {
        case ("open", true, _): "kept the rate"
        case ("open", false, _): "fell behind: \(self.late) late, \(self.skipped) skipped"
        case (_, _, "action"): "after the action"
        case (_, true, "request count"): "\(self.requests) requests"
        case (_, true, _): "settled, \(windows) windows"
        default: "not settled in \(windows) windows"
        }
    }

    /// Whether the level ended as it should: settled, counted, kept its rate, or ran its action.
    public var endedWell: Bool { self.stable || self.stopReason == "action" }

    /// The generator, not the server, is likely the limit: its threads were nearly all busy,
    /// or (open loop) it could not keep to the schedule.
    public var generatorBound: Bool {
        self.generatorCores >= 0.85 * Double(max(1, self.generatorLoops)) || (self.mode == "open" && !self.stable)
    }
}

/// A whole run, for `--json`, `--csv` and `--report`.
public struct BenchReport: Codable, Sendable, Equatable {
    public var model: String
    /// The version or label asked for, if any.
    public var target: String
    public var servers: [String]
    public var connections: Int
    public var compression: Bool
    /// When the run started (ISO 8601).
    public var startedAt: String
    public var levels: [LevelResult]

    public init(
        model: String, target: String = "", servers: [String], connections: Int = 1, compression: Bool = false,
        startedAt: String = "", levels: [LevelResult]
    ) {
        self.model = model
        self.target = target
        self.servers = servers
        self.connections = connections
        self.compression = compression
        self.startedAt = startedAt
        self.levels = levels
    }

    /// One CSV row per level, with a header.
    public var csv: String {
        var lines = [
            "mode,concurrency,asked_rps,requests,errors,throughput_rps,p50_us,p90_us,p95_us,p99_us,p999_us,max_us,stable,stop_reason,late,skipped,server_queue_us,server_compute_us,server_batch,generator_cores"
        ]
        func f(_ x: Double) -> String { String(format: "%.1f", x) }
        for l in self.levels {
            lines.append(
                [
                    l.mode, "\(l.concurrency)", f(l.askedRate), "\(l.requests)", "\(l.errorCount)", f(l.throughput),
                    f(l.latency.p50), f(l.latency.p90), f(l.latency.p95), f(l.latency.p99), f(l.latency.p999),
                    f(l.latency.max),
                    l.stable ? "true" : "false", l.stopReason, "\(l.late)", "\(l.skipped)",
                    l.server.map { f($0.queueMicros) } ?? "", l.server.map { f($0.computeMicros) } ?? "",
                    l.server.map { String(format: "%.2f", $0.meanBatchSize) } ?? "",
                    String(format: "%.2f", l.generatorCores),
                ].joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
