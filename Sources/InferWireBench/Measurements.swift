import Foundation
public import Histogram

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

/// A histogram of round-trip times in nanoseconds, 3 significant digits, up to 10 s.
public func makeLatencyHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
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

/// Everything measured at one load level.
public struct LevelResult: Codable, Sendable, Equatable {
    /// Requests kept in flight (closed loop).
    public var concurrency: Int
    public var requests: UInt64
    /// Failed requests by status code name.
    public var errors: [String: UInt64]
    /// Successful requests per second over the counted windows.
    public var throughput: Double
    public var latency: LatencySummary
    /// Throughput of each counted window.
    public var windowThroughputs: [Double]
    /// True when the last windows agreed (see ``StabilityRule``); false when the level
    /// stopped at the window limit without settling.
    public var stable: Bool
    /// Requests answered by each model version.
    public var versions: [String: UInt64]

    public init(concurrency: Int, requests: UInt64, errors: [String: UInt64], throughput: Double, latency: LatencySummary,
                windowThroughputs: [Double], stable: Bool, versions: [String: UInt64]) {
        self.concurrency = concurrency
        self.requests = requests
        self.errors = errors
        self.throughput = throughput
        self.latency = latency
        self.windowThroughputs = windowThroughputs
        self.stable = stable
        self.versions = versions
    }
}

/// A whole run, for `--json`.
public struct BenchReport: Codable, Sendable, Equatable {
    public var model: String
    public var servers: [String]
    public var levels: [LevelResult]

    public init(model: String, servers: [String], levels: [LevelResult]) {
        self.model = model
        self.servers = servers
        self.levels = levels
    }

    /// One CSV row per level, with a header.
    public var csv: String {
        var lines = ["concurrency,requests,errors,throughput_rps,p50_us,p90_us,p95_us,p99_us,p999_us,max_us,stable"]
        for l in self.levels {
            let errors = l.errors.values.reduce(0, +)
            lines.append([
                "\(l.concurrency)", "\(l.requests)", "\(errors)", String(format: "%.1f", l.throughput),
                String(format: "%.1f", l.latency.p50), String(format: "%.1f", l.latency.p90), String(format: "%.1f", l.latency.p95),
                String(format: "%.1f", l.latency.p99), String(format: "%.1f", l.latency.p999), String(format: "%.1f", l.latency.max),
                l.stable ? "true" : "false",
            ].joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
