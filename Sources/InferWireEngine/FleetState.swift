public import Foundation

/// One model's rollout as the fleet shares it, with the store revision it was written at.
public struct SharedRollout: Sendable, Equatable {
    public var rollout: PersistedRollout
    /// The store's revision of the last change; later changes have higher ones.
    public var revision: Int64

    public init(rollout: PersistedRollout, revision: Int64) {
        self.rollout = rollout
        self.revision = revision
    }
}

/// The outcome of a compare-and-swap write of one model's shared rollout.
public enum SharedRolloutWrite: Sendable, Equatable {
    /// Written; the new value's revision.
    case written(revision: Int64)
    /// Someone else changed it first: the value as it is now (nil: it no longer exists).
    case conflict(current: SharedRollout?)
}

/// What one replica tells the fleet about itself, refreshed periodically and gone when the
/// replica stops (or stops refreshing it): its versions' phases, and each version's recent
/// request counts, which the replica leading the canary guard adds up.
public struct ReplicaReport: Sendable, Equatable, Codable {
    /// One version's phase on the replica.
    public struct Version: Sendable, Equatable, Codable {
        public var version: Int64
        /// The wire name of the phase: `LOADING`, `READY`, `FAILED`, `DRAINING`, `UNLOADED`.
        public var state: String
        public var reason: String

        public init(version: Int64, state: String, reason: String = "") {
            self.version = version
            self.state = state
            self.reason = reason
        }
    }

    /// One version's outcomes over the last ``span`` seconds.
    public struct Window: Sendable, Equatable, Codable {
        public var version: Int64
        public var span: Int
        public var requests: UInt64
        public var failures: UInt64
        /// Requests by latency bucket (bucket i holds latencies up to 2^i µs).
        public var latency: [UInt64]

        public init(version: Int64, span: Int, requests: UInt64, failures: UInt64, latency: [UInt64]) {
            self.version = version
            self.span = span
            self.requests = requests
            self.failures = failures
            self.latency = latency
        }
    }

    /// One model on the replica.
    public struct Model: Sendable, Equatable, Codable {
        public var versions: [Version]
        /// Windows of the canary and stable versions of a model whose canary is guarded.
        public var windows: [Window]

        public init(versions: [Version], windows: [Window] = []) {
            self.versions = versions
            self.windows = windows
        }
    }

    public var replica: String
    public var unixMillis: Int64
    public var models: [String: Model]

    public init(replica: String, unixMillis: Int64, models: [String: Model]) {
        self.replica = replica
        self.unixMillis = unixMillis
        self.models = models
    }
}

/// Where replicas share rollout state: one value per model, changed only by compare-and-swap
/// so that concurrent changes cannot overwrite each other; each replica's report; and which
/// replica leads the canary guard.
///
/// Every method may throw when the store cannot be reached; the manager then serves with the
/// last state it saw, refuses changes UNAVAILABLE, and reconciles when the store answers
/// again.
public protocol FleetStateStore: Sendable {
    /// Where the state lives, for logs and errors (never a secret).
    var location: String { get }
    /// Every model's shared rollout, and the store revision they were read at.
    func load() async throws -> (rollouts: [String: SharedRollout], revision: Int64)
    /// One model's shared rollout as it is now (a linearizable read); nil when it has none.
    func read(model: String) async throws -> SharedRollout?
    /// Writes one model's rollout if its revision is still `expectedRevision` (0: only if the
    /// model has none yet).
    func write(model: String, rollout: PersistedRollout, expectedRevision: Int64) async throws
        -> SharedRolloutWrite
    /// Hands every change after `revision` to `handle`, in order, until the calling task is
    /// cancelled (then returns) or the watch breaks (then throws; the caller reloads).
    func watch(from revision: Int64, _ handle: @escaping @Sendable ([String: SharedRollout]) async -> Void)
        async throws
    /// Publishes this replica's report, replacing its previous one.
    func publish(_ report: ReplicaReport) async throws
    /// The reports of every replica that is up.
    func reports() async throws -> [ReplicaReport]
    /// Takes or keeps the lead of the canary guard for `replica`; true while it leads. One
    /// replica leads at a time; the lead passes on when its holder stops or cannot reach
    /// the store.
    func leadGuard(as replica: String) async throws -> Bool
    /// Withdraws this replica's report and lead (graceful shutdown).
    func leave() async
}

extension ReplicaReport.Window {
    /// The windows of one version across replicas, added up.
    static func total(_ windows: [Self]) -> CanaryGuard.WindowSummary {
        var requests: UInt64 = 0
        var failures: UInt64 = 0
        var histogram = [UInt64](repeating: 0, count: 32)
        for window in windows {
            requests += window.requests
            failures += window.failures
            for (i, n) in window.latency.prefix(32).enumerated() { histogram[i] += n }
        }
        return CanaryGuard.WindowSummary(
            requests: requests, failures: failures, p99Micros: SlidingWindow.p99Bound(histogram))
    }
}
