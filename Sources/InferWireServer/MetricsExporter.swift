import Foundation
import InferWireCore
public import InferWireEngine
import InferWireProto
public import Prometheus

#if canImport(Glibc)
    import Glibc
#endif

/// The Prometheus exposition of a server: what the request path counts, collected at
/// scrape time from the counters it keeps anyway (per-version statistics, connection
/// counts), and the events reported through swift-metrics (rollout events, model loads,
/// rejected connections, HTTP requests) into `events`, the registry behind the process's
/// `PrometheusMetricsFactory`.
public struct MetricsExporter: Sendable {
    public let dispatcher: RequestDispatcher
    public let manager: ModelManager?
    /// Listeners by name (`inference`, `management`).
    public let listeners: [(name: String, server: InferWireServer)]
    /// Where swift-metrics events are kept; nil exports none.
    public let events: PrometheusCollectorRegistry?

    public init(
        dispatcher: RequestDispatcher, manager: ModelManager?, listeners: [(name: String, server: InferWireServer)],
        events: PrometheusCollectorRegistry? = nil
    ) {
        self.dispatcher = dispatcher
        self.manager = manager
        self.listeners = listeners
        self.events = events
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
            // OK is always present, so rates have a series before the first request.
            var byCode = version.statusCounts
            byCode[0] = byCode[0] ?? 0
            for (code, count) in byCode.sorted(by: { $0.key < $1.key }) {
                counter(
                    "inferwire_requests_total",
                    labels + [("code", "\(InferWireError.Code(rawValue: Int(code)))")],
                    help:
                        "Infer requests answered by a model version, by status code (refusals before running included)."
                ).increment(by: Int64(count))
            }
            counter(
                "inferwire_executions_total", labels,
                help: "Model executions; requests / executions is the mean batch size."
            ).increment(by: Int64(version.executionCount))
        }
        for (code, count) in self.dispatcher.unroutedStatusCounts.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            counter(
                "inferwire_unrouted_requests_total", [("code", "\(code)")],
                help:
                    "Infer requests answered before reaching a model version: undecodable, not permitted, or naming no model or version served."
            ).increment(by: Int64(count))
        }
        for depth in self.dispatcher.queueDepths() {
            gauge(
                "inferwire_queue_depth", [("model", depth.model), ("version", "\(depth.version)")],
                help: "Requests waiting in the version's queue."
            ).set(Int64(depth.queued))
        }
        histograms += Self.histogram(
            "inferwire_request_duration_seconds",
            "Time from reading an infer request to its answer being ready: decoding, queue, compute, encoding.",
            statistics, buckets: \.requestTimeHistogram, sumMicros: \.requestTimeUs)
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
            gauge(
                "inferwire_shadow_percent", [("model", status.name)],
                help: "Share of stable's unlabelled requests mirrored to the shadow version."
            ).set(Int64(status.rollout.shadowPercent))
            if status.hasShadow {
                let labels = [("model", status.name), ("version", "\(status.shadow.version)")]
                counter(
                    "inferwire_shadow_comparisons_total", labels,
                    help: "Answers of the shadow version compared with stable's."
                ).increment(by: Int64(status.shadow.compared))
                counter(
                    "inferwire_shadow_differences_total", labels,
                    help: "Compared answers where the shadow version's differed from stable's."
                ).increment(by: Int64(status.shadow.differing))
                counter(
                    "inferwire_shadow_failures_total", labels,
                    help: "Mirrored requests the shadow version failed while stable answered."
                ).increment(by: Int64(status.shadow.shadowFailures))
                gauge(
                    "inferwire_shadow_max_abs_difference", labels,
                    help: "Largest absolute difference between a shadow and a stable output value."
                ).set(status.shadow.maxAbsDifference)
            }
        }
        if let manager = self.manager, manager.sharesState {
            gauge(
                "inferwire_state_store_up", [],
                help: "1 while the shared rollout state's store answers; 0 while serving on the last state seen."
            ).set(Int64(manager.sharedStateProblem == nil ? 1 : 0))
            gauge(
                "inferwire_canary_guard_leader", [],
                help: "1 on the replica that runs the canary guard for the fleet."
            ).set(Int64(manager.leadsCanaryGuard ? 1 : 0))
        }
        for model in self.manager?.facts() ?? [] {
            for (version, duration) in model.loadDurations.sorted(by: { $0.key < $1.key }) {
                gauge(
                    "inferwire_model_load_duration_seconds", [("model", model.name), ("version", "\(version)")],
                    help: "How long loading the version took."
                ).set(Double(duration.inNanoseconds) / 1e9)
            }
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
            if let traffic = server.traffic {
                let bytes = traffic.bytes
                counter(
                    "inferwire_received_bytes_total", [("listener", name)],
                    help: "Bytes read from connections (after TLS decryption)."
                ).increment(by: Int64(bytes.received))
                counter(
                    "inferwire_sent_bytes_total", [("listener", name)],
                    help: "Bytes written to connections (before TLS encryption)."
                ).increment(by: Int64(bytes.sent))
                gauge(
                    "inferwire_requests_in_flight", [("listener", name)],
                    help: "Requests read and not yet answered."
                ).set(Int64(traffic.inFlight))
            }
        }

        if let log = self.dispatcher.predictionLog {
            let counts = log.counts
            counter(
                "inferwire_prediction_log_records_total", help: "Sampled requests written to the prediction log."
            ).increment(by: Int64(counts.written))
            for (reason, count) in [("buffer_full", counts.dropped), ("write_failed", counts.failed)] {
                counter(
                    "inferwire_prediction_log_dropped_total", [("reason", reason)],
                    help:
                        "Sampled requests not logged: the buffer was full (the request did not wait), or the write failed."
                ).increment(by: Int64(count))
            }
            gauge("inferwire_prediction_log_buffered", help: "Records waiting for the prediction log's writer.")
                .set(Int64(counts.buffered))
            for (model, versions) in log.featureStatistics().sorted(by: { $0.key < $1.key }) {
                for (version, features) in versions.sorted(by: { $0.key < $1.key }) {
                    for feature in features {
                        let labels = [
                            ("model", model), ("version", "\(version)"), ("input", feature.input),
                            ("feature", "\(feature.index)"),
                        ]
                        counter(
                            "inferwire_feature_values_total", labels,
                            help: "Values of the input feature seen in sampled requests (NaN excluded)."
                        ).increment(by: Int64(feature.count))
                        counter(
                            "inferwire_feature_missing_total", labels,
                            help: "NaN (missing) values of the input feature in sampled requests."
                        ).increment(by: Int64(feature.missing))
                        guard feature.count > 0 else { continue }
                        gauge("inferwire_feature_mean", labels, help: "Mean of the input feature in sampled requests.")
                            .set(feature.mean)
                        gauge(
                            "inferwire_feature_stddev", labels,
                            help: "Standard deviation of the input feature in sampled requests."
                        ).set(feature.variance.squareRoot())
                        gauge("inferwire_feature_min", labels, help: "Smallest value of the input feature seen.")
                            .set(feature.min)
                        gauge("inferwire_feature_max", labels, help: "Largest value of the input feature seen.")
                            .set(feature.max)
                    }
                }
            }
        }

        let process = ProcessFacts.read()
        gauge("process_resident_memory_bytes", help: "Resident memory size in bytes.")
            .set(process.residentBytes)
        gauge("process_open_fds", help: "Open file descriptors.").set(Int64(process.openFiles))
        gauge("process_start_time_seconds", help: "Start time of the process since the Unix epoch in seconds.")
            .set(ProcessFacts.startTime)
        counter("process_cpu_seconds_total", help: "User and system CPU time in seconds.")
            .increment(by: process.cpuSeconds)
        return registry.emitToString() + histograms + (self.events?.emitToString() ?? "")
    }

    /// Power-of-two buckets exported: 1 µs to 2^24 µs (16.8 s); longer times land in +Inf.
    static let exportedBuckets = 25

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
            let counts = version[keyPath: buckets]
            var cumulative: UInt64 = 0
            for index in 0..<Self.exportedBuckets {
                cumulative += index < counts.count ? counts[index] : 0
                let bound = Double(UInt64(1) << UInt64(index)) / 1_000_000
                text += "\(name)_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
            }
            let total = counts.reduce(0, +)
            text += "\(name)_bucket{\(labels),le=\"+Inf\"} \(total)\n"
            text += "\(name)_sum{\(labels)} \(Double(version[keyPath: sumMicros]) / 1_000_000)\n"
            text += "\(name)_count{\(labels)} \(total)\n"
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

    /// When the process started, in seconds since the Unix epoch: now less the process's
    /// age, which /proc gives in clock ticks since boot.
    static let startTime: Double = {
        var uptime = 0.0
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")"),
            let boot = (try? String(contentsOfFile: "/proc/uptime", encoding: .utf8))?.split(separator: " ").first
                .flatMap({ Double($0) })
        {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 19, let ticks = Double(fields[19]) {
                uptime = boot - ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
            }
        }
        return Date().timeIntervalSince1970 - uptime
    }()
}
