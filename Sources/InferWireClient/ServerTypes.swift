public import InferWireCore
package import InferWireProto

// What the server answers, as Swift values. The wire messages stay inside the client, so
// a schema change does not reach code written against these types.

/// What the server said about itself in its HELLO: the connection's limits and identity.
public struct ServerHello: Sendable, Hashable {
    /// The protocol version the connection speaks.
    public var version: Int
    /// Largest payload the server accepts in one frame, in bytes (after decompression too).
    public var maxFrameSize: Int
    /// Requests one connection may have in flight.
    public var maxConcurrentRequests: Int
    public var serverName: String
    public var serverVersion: String
    /// The server reads compressed payloads and compresses responses when asked.
    public var compression: Bool

    package init(_ wire: Inferwire_V1_Hello) {
        self.version = Int(wire.version)
        self.maxFrameSize = Int(wire.maxFrameSize)
        self.maxConcurrentRequests = Int(wire.maxConcurrentRequests)
        self.serverName = wire.serverName
        self.serverVersion = wire.serverVersion
        self.compression = wire.compression
    }
}

/// The server's name, release, protocols and how it computes.
public struct ServerMetadata: Sendable, Hashable {
    public var name: String
    public var version: String
    /// Protocol versions the server speaks.
    public var protocolVersions: [Int]
    /// Optional features, e.g. `compression`.
    public var extensions: [String]
    /// Facts about how it computes, e.g. `blas.kernel`.
    public var runtime: [String: String]

    package init(_ wire: Inferwire_V1_ServerMetadataResponse) {
        self.name = wire.name
        self.version = wire.version
        self.protocolVersions = wire.protocolVersions.map(Int.init)
        self.extensions = wire.extensions
        self.runtime = wire.runtime
    }
}

/// Whether a model (or one of its versions) can serve now.
public struct ModelReadiness: Sendable, Hashable {
    public var ready: Bool
    /// The version that would serve; nil when not ready.
    public var version: Int64?

    package init(_ wire: Inferwire_V1_ModelReadyResponse) {
        self.ready = wire.ready
        self.version = wire.ready ? wire.version : nil
    }
}

/// What a model takes and gives.
public struct ModelMetadata: Sendable, Hashable {
    public var name: String
    /// Every version serving.
    public var versions: [Int64]
    /// The version this metadata describes.
    public var version: Int64
    public var platform: String
    /// Inputs with their full shapes: -1 marks a dimension of any size (the batch among them).
    public var inputs: [TensorSpec]
    public var outputs: [TensorSpec]
    /// 0: no batch dimension; otherwise the largest batch one request may carry.
    public var maxBatchSize: Int

    package init(_ wire: Inferwire_V1_ModelMetadataResponse) {
        func spec(_ s: Inferwire_V1_TensorSpec) -> TensorSpec {
            TensorSpec(name: s.name, dataType: DataType(s.datatype), shape: s.shape.map { Int(clamping: $0) })
        }
        self.name = wire.name
        self.versions = wire.versions
        self.version = wire.version
        self.platform = wire.platform
        self.inputs = wire.inputs.map(spec)
        self.outputs = wire.outputs.map(spec)
        self.maxBatchSize = Int(wire.maxBatchSize)
    }
}

/// What one model version has done since it was loaded.
public struct VersionStatistics: Sendable, Hashable {
    public var name: String
    public var version: Int64
    /// Requests answered by an execution, successful or not.
    public var requestCount: UInt64
    /// Requests that failed: the model's error, a deadline passed in the queue, a full queue.
    public var failureCount: UInt64
    /// Model executions; `requestCount / executionCount` is the mean batch size.
    public var executionCount: UInt64
    /// Executions by batch size (rows in the batch → executions).
    public var batchSizeCounts: [Int: UInt64]
    /// Time requests spent queued, summed over requests.
    public var queueTime: Duration
    /// Time requests spent executing, summed over requests.
    public var computeTime: Duration
    /// Power-of-two histograms in microseconds: bucket i counts durations in [2^(i-1), 2^i) µs.
    public var queueTimeHistogram: [UInt64]
    public var computeTimeHistogram: [UInt64]
    /// Answers by status code, refusals before running included.
    public var statusCounts: [InferWireError.Code: UInt64]
    /// Time from the server reading a request to its answer, summed over requests (zero when
    /// the server keeps no request metrics), and its histogram (buckets as above).
    public var requestTime: Duration
    public var requestTimeHistogram: [UInt64]
    /// Input feature statistics over the requests the server's prediction log sampled.
    public var features: [FeatureStatistics]

    /// Running statistics of one input feature (position `index` of input `input` in every row).
    public struct FeatureStatistics: Sendable, Hashable {
        public var input: String
        public var index: Int
        /// Values seen, NaN excluded.
        public var count: UInt64
        public var mean: Double
        /// Population variance.
        public var variance: Double
        public var min: Double
        public var max: Double
        /// NaN (missing) values seen.
        public var missing: UInt64
    }

    package init(_ wire: Inferwire_V1_VersionStatistics) {
        self.name = wire.name
        self.version = wire.version
        self.requestCount = wire.requestCount
        self.failureCount = wire.failureCount
        self.executionCount = wire.executionCount
        self.batchSizeCounts = Dictionary(uniqueKeysWithValues: wire.batchSizeCounts.map { (Int($0.key), $0.value) })
        self.queueTime = .microseconds(Int64(clamping: wire.queueTimeUs))
        self.computeTime = .microseconds(Int64(clamping: wire.computeTimeUs))
        self.queueTimeHistogram = wire.queueTimeHistogram
        self.computeTimeHistogram = wire.computeTimeHistogram
        self.statusCounts = Dictionary(
            wire.statusCounts.map { (InferWireError.Code(rawValue: Int($0.key)), $0.value) }, uniquingKeysWith: +)
        self.requestTime = .microseconds(Int64(clamping: wire.requestTimeUs))
        self.requestTimeHistogram = wire.requestTimeHistogram
        self.features = wire.features.map {
            FeatureStatistics(
                input: $0.input, index: Int($0.index), count: $0.count, mean: $0.mean, variance: $0.variance,
                min: $0.min, max: $0.max, missing: $0.missing)
        }
    }
}

/// Where a model version is in its life.
///
/// A struct rather than an enum so that a state added by a newer server is shown
/// (`STATE_7`) rather than breaking exhaustive `switch`es.
public struct VersionState: Sendable, Hashable, CustomStringConvertible {
    /// The wire number (`VersionState` in `management.proto`).
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let unspecified = VersionState(rawValue: 0)
    /// Being read, planned and warmed; not routed yet.
    public static let loading = VersionState(rawValue: 1)
    /// Serving.
    public static let ready = VersionState(rawValue: 2)
    /// Out of routing, finishing what it admitted.
    public static let draining = VersionState(rawValue: 3)
    /// Released.
    public static let unloaded = VersionState(rawValue: 4)
    /// Could not be loaded; the status's `reason` says why.
    public static let failed = VersionState(rawValue: 5)

    private static let names = ["UNSPECIFIED", "LOADING", "READY", "DRAINING", "UNLOADED", "FAILED"]

    public var description: String {
        (0..<Self.names.count).contains(self.rawValue) ? Self.names[self.rawValue] : "STATE_\(self.rawValue)"
    }
}

/// One version of a model, as the management service reports it.
public struct VersionStatus: Sendable, Hashable {
    public var version: Int64
    public var state: VersionState
    /// Why it failed, for ``VersionState/failed``.
    public var reason: String
    public var requestCount: UInt64
    public var failureCount: UInt64
    /// Mean execution time per request.
    public var meanCompute: Duration

    package init(_ wire: Inferwire_V1_VersionStatus) {
        self.version = wire.version
        self.state = VersionState(rawValue: wire.state.rawValue)
        self.reason = wire.reason
        self.requestCount = wire.requestCount
        self.failureCount = wire.failureCount
        self.meanCompute = .microseconds(Int64(clamping: wire.meanComputeUs))
    }
}

/// Which versions of a model get which traffic.
public struct Rollout: Sendable, Hashable, CustomStringConvertible {
    /// The version unlabelled requests go to; nil when none is ready.
    public var stable: Int64?
    /// The version taking ``canaryPercent`` of unlabelled requests, if any.
    public var canary: Int64?
    public var canaryPercent: Int
    /// The canary share is chosen by the request's routing key, so a caller stays on one version.
    public var sticky: Bool
    /// The version a rollback returns to, while it is still loaded.
    public var previousStable: Int64?
    /// The version receiving a mirrored ``shadowPercent`` of stable's requests, if any.
    public var shadow: Int64?
    public var shadowPercent: Int

    package init(_ wire: Inferwire_V1_Rollout) {
        func version(_ v: Int64) -> Int64? { v == 0 ? nil : v }
        self.stable = version(wire.stableVersion)
        self.canary = version(wire.canaryVersion)
        self.canaryPercent = Int(wire.canaryPercent)
        self.sticky = wire.sticky
        self.previousStable = version(wire.previousStableVersion)
        self.shadow = version(wire.shadowVersion)
        self.shadowPercent = Int(wire.shadowPercent)
    }

    /// One line for people: "stable 2, canary 3 at 10% (sticky), previous 1, shadow 4 at 5%".
    public var description: String {
        var text = "stable \(self.stable.map(String.init) ?? "none")"
        if let canary { text += ", canary \(canary) at \(self.canaryPercent)%\(self.sticky ? " (sticky)" : "")" }
        if let previousStable { text += ", previous \(previousStable)" }
        if let shadow { text += ", shadow \(shadow) at \(self.shadowPercent)%" }
        return text
    }
}

/// How a shadow version's answers compared with stable's.
public struct ShadowReport: Sendable, Hashable {
    public var version: Int64
    /// Requests answered by both.
    public var compared: UInt64
    /// Of those, the ones whose outputs differed.
    public var differing: UInt64
    public var maxAbsDifference: Double
    public var meanAbsDifference: Double
    /// Mirrored requests the shadow version failed.
    public var shadowFailures: UInt64

    package init(_ wire: Inferwire_V1_ShadowReport) {
        self.version = wire.version
        self.compared = wire.compared
        self.differing = wire.differing
        self.maxAbsDifference = wire.maxAbsDifference
        self.meanAbsDifference = wire.meanAbsDifference
        self.shadowFailures = wire.shadowFailures
    }
}

/// A model's versions and rollout.
public struct ModelStatus: Sendable, Hashable {
    public var name: String
    public var versions: [VersionStatus]
    public var rollout: Rollout
    /// The shadow comparison, while a version shadows stable.
    public var shadow: ShadowReport?
    /// When replicas share rollout state: every replica's versions as last reported; empty
    /// for a server on its own.
    public var replicas: [ReplicaVersions]

    package init(_ wire: Inferwire_V1_ModelStatus) {
        self.name = wire.name
        self.versions = wire.versions.map(VersionStatus.init)
        self.rollout = Rollout(wire.rollout)
        self.shadow = wire.hasShadow && wire.shadow.version != 0 ? ShadowReport(wire.shadow) : nil
        self.replicas = wire.replicas.map(ReplicaVersions.init)
    }
}

/// One replica's versions of a model, from its last report to the shared state.
public struct ReplicaVersions: Sendable, Hashable {
    public var replica: String
    /// Version, state and reason of each version (no counts).
    public var versions: [VersionStatus]
    /// When the replica reported, as milliseconds since the Unix epoch.
    public var reportedUnixMillis: Int64

    package init(_ wire: Inferwire_V1_ReplicaVersions) {
        self.replica = wire.replica
        self.versions = wire.versions.map(VersionStatus.init)
        self.reportedUnixMillis = wire.reportedUnixMillis
    }
}

/// One change to a model's versions or routing.
public struct HistoryEntry: Sendable, Hashable {
    /// When, as milliseconds since the Unix epoch.
    public var unixMillis: Int64
    public var model: String
    /// What happened: `promote`, `rollback`, `auto-rollback`, `traffic`, `shadow`, `load`, …
    public var action: String
    public var detail: String
    /// Who did it: `api`, `guard`, `poller`, `startup`, …
    public var actor: String
    /// For `api`: the authenticated principal that asked; empty without authentication.
    public var principal: String

    package init(_ wire: Inferwire_V1_HistoryEntry) {
        self.unixMillis = wire.unixMillis
        self.model = wire.model
        self.action = wire.action
        self.detail = wire.detail
        self.actor = wire.actor
        self.principal = wire.principal
    }
}
