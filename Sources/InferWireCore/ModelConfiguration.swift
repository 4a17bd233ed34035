package import InferWireProto

/// A model's configuration: what runs it, what it takes and gives, how its versions are
/// executed, served and rolled out. Read from `<repository>/<model>/config.pbtxt`.
public struct ModelConfiguration: Sendable, Hashable {
    /// The model's name; equals its directory name.
    public var name: String
    /// What executes the model, e.g. `onnx`, `identity`.
    public var platform: String
    /// 0: no batch dimension. > 0: every input and output has a leading batch dimension,
    /// at most this large, that ``inputs`` and ``outputs`` leave out.
    public var maxBatchSize: Int
    /// Declared inputs, without the batch dimension. Empty: taken from the model itself.
    public var inputs: [TensorSpec]
    /// Declared outputs, without the batch dimension. Empty: taken from the model itself.
    public var outputs: [TensorSpec]
    /// Free-form settings read by the platform (e.g. `model_filename`).
    public var parameters: [String: String]
    /// Execution instances per version; at least 1.
    public var instances: Int
    /// Present: concurrent requests to one version are merged into batches.
    public var dynamicBatching: DynamicBatching?
    /// Which version directories are served.
    public var versionPolicy: VersionPolicy
    /// What the repository poller does with a new version, and the canary guard.
    public var rollout: RolloutSettings

    /// How requests are merged into batches.
    public struct DynamicBatching: Sendable, Hashable {
        /// Batch sizes worth waiting for.
        public var preferredBatchSizes: [Int]
        /// How long the oldest queued request may wait for others; zero never waits.
        public var maxQueueDelay: Duration
        /// Queued requests before new ones are refused with RESOURCE_EXHAUSTED; 0: the default.
        public var maxQueueSize: Int

        public init(preferredBatchSizes: [Int] = [], maxQueueDelay: Duration = .zero, maxQueueSize: Int = 0) {
            self.preferredBatchSizes = preferredBatchSizes
            self.maxQueueDelay = maxQueueDelay
            self.maxQueueSize = maxQueueSize
        }
    }

    /// Which of a model's version directories are served.
    public enum VersionPolicy: Sendable, Hashable {
        /// The highest `count` versions.
        case latest(count: Int)
        /// Every version directory.
        case all
        /// Exactly these versions (those present).
        case specific([Int64])

        /// The default: the highest version only.
        public static let `default` = VersionPolicy.latest(count: 1)

        /// The versions to serve among those present.
        public func select(from versions: [Int64]) -> [Int64] {
            let sorted = versions.sorted()
            switch self {
            case .latest(let count): return Array(sorted.suffix(max(1, count)))
            case .all: return sorted
            case .specific(let wanted): return sorted.filter(wanted.contains)
            }
        }
    }

    /// What happens when a new version appears, and how a canary is watched.
    public struct RolloutSettings: Sendable, Hashable {
        /// The role a version found by the repository poller takes.
        public enum NewVersionRole: Sendable, Hashable {
            /// A canary with ``canaryPercent`` of the traffic.
            case canary
            /// Stable at once (the old stable stays loaded for the grace period).
            case stable
            /// Loaded, routed only to requests that name its number.
            case none
        }

        public var newVersionRole: NewVersionRole
        /// The new canary's share of unlabelled requests, 1–100.
        public var canaryPercent: Int
        /// How long a replaced stable version stays loaded for rollback.
        public var rollbackGrace: Duration
        /// Rolls a canary back by itself when it does worse than stable; nil: no guard.
        public var `guard`: CanaryGuardSettings?

        public init(
            newVersionRole: NewVersionRole = .canary, canaryPercent: Int = 10, rollbackGrace: Duration = .seconds(600),
            guard: CanaryGuardSettings? = nil
        ) {
            self.newVersionRole = newVersionRole
            self.canaryPercent = canaryPercent
            self.rollbackGrace = rollbackGrace
            self.guard = `guard`
        }
    }

    /// When a canary is rolled back automatically.
    public struct CanaryGuardSettings: Sendable, Hashable {
        /// Roll back when the canary's error rate exceeds stable's by more than this
        /// (0.05: five percentage points); 0 switches the check off.
        public var maxErrorRateIncrease: Double
        /// Roll back when the canary's p99 exceeds this multiple of stable's; 0 switches it off.
        public var maxP99Ratio: Double
        /// The span compared.
        public var window: Duration
        /// Canary requests in the window before any judgement.
        public var minRequests: Int

        public init(
            maxErrorRateIncrease: Double = 0, maxP99Ratio: Double = 0, window: Duration = .seconds(30),
            minRequests: Int = 50
        ) {
            self.maxErrorRateIncrease = maxErrorRateIncrease
            self.maxP99Ratio = maxP99Ratio
            self.window = window
            self.minRequests = minRequests
        }
    }

    public init(
        name: String, platform: String, maxBatchSize: Int = 0, inputs: [TensorSpec] = [], outputs: [TensorSpec] = [],
        parameters: [String: String] = [:], instances: Int = 1, dynamicBatching: DynamicBatching? = nil,
        versionPolicy: VersionPolicy = .default, rollout: RolloutSettings = RolloutSettings()
    ) {
        self.name = name
        self.platform = platform
        self.maxBatchSize = maxBatchSize
        self.inputs = inputs
        self.outputs = outputs
        self.parameters = parameters
        self.instances = instances
        self.dynamicBatching = dynamicBatching
        self.versionPolicy = versionPolicy
        self.rollout = rollout
    }
}

extension ModelConfiguration {
    /// The configuration a `ModelConfig` message describes, with the defaults its
    /// comments state filled in.
    package init(_ wire: Inferwire_V1_ModelConfig) {
        func spec(_ s: Inferwire_V1_TensorSpec) -> TensorSpec {
            TensorSpec(name: s.name, dataType: DataType(s.datatype), shape: s.shape.map { Int(clamping: $0) })
        }
        self.init(
            name: wire.name, platform: wire.platform, maxBatchSize: Int(wire.maxBatchSize),
            inputs: wire.input.map(spec), outputs: wire.output.map(spec), parameters: wire.parameters,
            instances: max(1, Int(wire.instances)),
            dynamicBatching: wire.hasDynamicBatching
                ? DynamicBatching(
                    preferredBatchSizes: wire.dynamicBatching.preferredBatchSize.map(Int.init),
                    maxQueueDelay: .microseconds(wire.dynamicBatching.maxQueueDelayUs),
                    maxQueueSize: Int(wire.dynamicBatching.maxQueueSize))
                : nil,
            versionPolicy: VersionPolicy(wire.hasVersionPolicy ? wire.versionPolicy : nil),
            rollout: RolloutSettings(wire.rollout))
    }
}

// The one place the wire's "0 means the default" rules are applied.

extension ModelConfiguration.VersionPolicy {
    /// The policy a `VersionPolicy` message names; nil (or an empty message) is the default.
    package init(_ wire: Inferwire_V1_VersionPolicy?) {
        switch wire?.policy {
        case .latest(let latest)?: self = .latest(count: max(1, Int(latest.numVersions)))
        case .all?: self = .all
        case .specific(let specific)?: self = .specific(specific.versions)
        case nil: self = .default
        }
    }
}

extension ModelConfiguration.RolloutSettings {
    /// The settings a `RolloutSettings` message gives, unset fields at their defaults.
    package init(_ wire: Inferwire_V1_RolloutSettings) {
        self.init()
        switch wire.newVersionRole {
        case .stable: self.newVersionRole = .stable
        case .none: self.newVersionRole = .none
        default: self.newVersionRole = .canary
        }
        if wire.canaryPercent > 0 { self.canaryPercent = Int(min(wire.canaryPercent, 100)) }
        if wire.rollbackGraceSeconds > 0 { self.rollbackGrace = .seconds(wire.rollbackGraceSeconds) }
        if wire.hasGuard { self.guard = ModelConfiguration.CanaryGuardSettings(wire.guard) }
    }
}

extension ModelConfiguration.CanaryGuardSettings {
    /// The guard a `RolloutGuard` message describes, unset fields at their defaults.
    package init(_ wire: Inferwire_V1_RolloutGuard) {
        self.init(maxErrorRateIncrease: wire.maxErrorRateIncrease, maxP99Ratio: wire.maxP99Ratio)
        if wire.windowSeconds > 0 { self.window = .seconds(Int64(wire.windowSeconds)) }
        if wire.minRequests > 0 { self.minRequests = Int(wire.minRequests) }
    }
}
