import Foundation
public import InferWireEngine
import InferWireProto
import Prometheus

#if canImport(Glibc)
    import Glibc
#endif

/// The Prometheus exposition of a server, collected at scrape time from counters the
/// request path keeps anyway (per-version statistics, connection counts), so that serving
/// pays nothing for metrics.
public struct MetricsExporter: Sendable {
    public let dispatcher: RequestDispatcher
    public let manager: ModelManager?
    /// Listeners by name (`inference`, `management`).
    public let listeners: [(name: String, server: InferWireServer)]

    public init(
        dispatcher: RequestDispatcher, manager: ModelManager?, listeners: [(name: String, server: InferWireServer)]
    ) {
        self.dispatcher = dispatcher
        self.manager = manager
        self.listeners = listeners
    }

    /// The metrics, in the Prometheus text format.
    public func exposition() -> String {
        let registry = PrometheusCollectorRegistry()
        func counter(_ name: String, _ labels: [(String, String)] = [], help: String) -> Counter {
            registry.makeCounter(
                descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
        }
        func gauge(_ name: String, _ labels: [(String, String)] = [], help: String) -> Gauge {
            registry.makeGauge(
                descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
        }
        var histograms = ""
        let statistics = (try? self.dispatcher.statisticsForExport()) ?? []
        for version in statistics {
            let labels = [("model", version.name), ("version", "\(version.version)")]
            counter(
                "inferwire_requests_total", labels,
                help: "Requests answered by an execution of the model version, successful or not."
            ).increment(by: Int64(version.requestCount))
            counter(
                "inferwire_request_failures_total", labels,
                help: "Requests that failed: the model's error, a deadline passed in the queue, a full queue."
            ).increment(by: Int64(version.failureCount))
            counter(
                "inferwire_executions_total", labels,
                help: "Model executions; requests / executions is the mean batch size."
            ).increment(by: Int64(version.executionCount))
        }
        histograms += Self.histogram(
            "inferwire_queue_duration_seconds", "Time requests waited in the version's queue.", statistics,
            buckets: \.queueTimeHistogram, sumMicros: \.queueTimeUs)
        histograms += Self.histogram(
            "inferwire_compute_duration_seconds", "Time requests spent executing.", statistics,
            buckets: \.computeTimeHistogram, sumMicros: \.computeTimeUs)
        histograms += Self.batchSizes(statistics)

        for status in self.manager?.list() ?? [] {
            for version in status.versions {
                gauge(
                    "inferwire_model_version_state",
                    [("model", status.name), ("version", "\(version.version)"), ("state", "\(version.state)")],
                    help: "1 for the state each known model version is in."
                ).set(Int64(1))
            }
            gauge(
                "inferwire_canary_percent", [("model", status.name)],
                help: "Share of unlabelled requests routed to the canary version."
            ).set(Int64(status.rollout.canaryPercent))
            gauge(
                "inferwire_stable_version", [("model", status.name)],
                help: "The version unlabelled requests go to (0: none)."
            ).set(status.rollout.stableVersion)
        }

        for (name, server) in self.listeners {
            let counts = server.connectionCounts
            gauge(
                "inferwire_connections_open", [("listener", name)], help: "Connections open now."
            ).set(Int64(counts.open))
            counter(
                "inferwire_connections_accepted_total", [("listener", name)], help: "Connections admitted since start."
            ).increment(by: Int64(counts.accepted))
            for (reason, count) in [
                ("server_limit", counts.refusedOverTotal), ("address_limit", counts.refusedOverAddress),
            ] {
                counter(
                    "inferwire_connections_refused_total", [("listener", name), ("reason", reason)],
                    help: "Connections refused since start, by the limit that refused them."
                ).increment(by: Int64(count))
            }
        }

        let process = ProcessFacts.read()
        gauge("process_resident_memory_bytes", help: "Resident memory size in bytes.")
            .set(process.residentBytes)
        gauge("process_open_fds", help: "Open file descriptors.").set(Int64(process.openFiles))
        counter("process_cpu_seconds_total", help: "User and system CPU time in seconds.")
            .increment(by: process.cpuSeconds)
        return registry.emitToString() + histograms
    }

    /// A Prometheus histogram from power-of-two microsecond buckets (bucket i: under 2^i µs).
    static func histogram(
        _ name: String, _ help: String, _ versions: [Inferwire_V1_VersionStatistics],
        buckets: KeyPath<Inferwire_V1_VersionStatistics, [UInt64]>,
        sumMicros: KeyPath<Inferwire_V1_VersionStatistics, UInt64>
    ) -> String {
        guard !versions.isEmpty else { return "" }
        var text = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        for version in versions {
            let labels = "model=\"\(escape(version.name))\",version=\"\(version.version)\""
            var cumulative: UInt64 = 0
            for (index, count) in version[keyPath: buckets].enumerated() {
                cumulative += count
                let bound = Double(UInt64(1) << UInt64(index)) / 1_000_000
                text += "\(name)_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
            }
            text += "\(name)_bucket{\(labels),le=\"+Inf\"} \(cumulative)\n"
            text += "\(name)_sum{\(labels)} \(Double(version[keyPath: sumMicros]) / 1_000_000)\n"
            text += "\(name)_count{\(labels)} \(cumulative)\n"
        }
        return text
    }

    /// Executions by batch size, as a histogram with power-of-two row buckets.
    static func batchSizes(_ versions: [Inferwire_V1_VersionStatistics]) -> String {
        guard !versions.isEmpty else { return "" }
        let name = "inferwire_batch_size"
        var text = "# HELP \(name) Rows per model execution.\n# TYPE \(name) histogram\n"
        let bounds: [UInt32] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        for version in versions {
            let labels = "model=\"\(escape(version.name))\",version=\"\(version.version)\""
            let counts = version.batchSizeCounts
            for bound in bounds {
                let below = counts.filter { $0.key <= bound }.values.reduce(0, +)
                text += "\(name)_bucket{\(labels),le=\"\(bound)\"} \(below)\n"
            }
            let total = counts.values.reduce(0, +)
            let rows = counts.reduce(UInt64(0)) { $0 + UInt64($1.key) * $1.value }
            text += "\(name)_bucket{\(labels),le=\"+Inf\"} \(total)\n"
            text += "\(name)_sum{\(labels)} \(rows)\n\(name)_count{\(labels)} \(total)\n"
        }
        return text
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}

/// The process's resident memory, CPU time and open descriptors, from /proc.
struct ProcessFacts {
    var residentBytes: Int64 = 0
    var cpuSeconds: Double = 0
    var openFiles = 0

    static func read() -> ProcessFacts {
        var facts = ProcessFacts()
        if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
            let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Int64($0) })
        {
            facts.residentBytes = pages * Int64(sysconf(Int32(_SC_PAGESIZE)))
        }
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 12 {
                let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
                facts.cpuSeconds = ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
            }
        }
        facts.openFiles = OpenFileLimit.openDescriptors() ?? 0
        return facts
    }
}
