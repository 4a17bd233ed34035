public import InferWireCore
public import InferWireProto
import Synchronization

/// The models being served and which version answers a request: the routing table.
///
/// Readers take one immutable ``Snapshot`` under a lock (a pointer copy), then work
/// without holding it; writers build a new snapshot and swap it in.
public final class ModelRegistry: Sendable {
    /// An immutable view of every served model.
    public struct Snapshot: Sendable {
        public var models: [String: ModelEntry] = [:]
    }

    /// The versions of one model.
    public struct ModelEntry: Sendable {
        /// Loaded versions by number.
        public var versions: [Int64: LoadedModel] = [:]
        /// Versions that failed to load, with the reason.
        public var failedVersions: [Int64: String] = [:]
        /// Why the whole model failed (a bad config), if it did.
        public var failure: String?
        /// The version that serves requests naming no version or the label `stable`.
        public var stable: Int64?
        /// A version receiving `canaryPercent` % of the requests that name no version.
        public var canary: Int64?
        public var canaryPercent: Int = 0
        /// Route by the request's routing key rather than at random.
        public var sticky = false
        /// A version mirrored `shadowPercent` % of stable's unlabelled requests, and its tally.
        public var shadow: ShadowTally?
        public var shadowPercent: Int = 0

        /// Loaded version numbers, ascending.
        public var readyVersions: [Int64] { self.versions.keys.sorted() }
    }

    private let state: Mutex<Snapshot>

    public init() {
        self.state = Mutex(Snapshot())
    }

    /// A registry serving what a repository scan produced; each model's highest loaded
    /// version is stable.
    public convenience init(contents: ModelRepository.Contents) {
        self.init()
        var snapshot = Snapshot()
        for model in contents.models {
            snapshot.models[model.name, default: ModelEntry()].versions[model.version] = model
        }
        for failure in contents.failures {
            if let version = failure.version {
                snapshot.models[failure.model, default: ModelEntry()].failedVersions[version] = failure.reason
            } else {
                snapshot.models[failure.model, default: ModelEntry()].failure = failure.reason
            }
        }
        for (name, entry) in snapshot.models {
            snapshot.models[name]?.stable = entry.versions.keys.max()
        }
        self.state.withLock { $0 = snapshot }
    }

    /// The current routing table.
    public func snapshot() -> Snapshot {
        self.state.withLock { $0 }
    }

    /// Changes the routing table: readers see the old table or the new one, never a mix.
    public func update(_ change: (inout Snapshot) -> Void) {
        self.state.withLock { change(&$0) }
    }
}

extension ModelRegistry.Snapshot {
    /// A stable 0–99 bucket for a routing key (FNV-1a), the same in every process.
    static func bucket(_ key: String) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return Int(hash % 100)
    }

    /// The model version that a request naming `name` and `selector` goes to.
    public func resolve(_ name: String, _ selector: Inferwire_V1_VersionSelector?, routingKey: String = "")
        throws(InferWireError) -> LoadedModel
    {
        try self.route(name, selector, routingKey: routingKey).model
    }

    /// The chosen version and its model's entry (for shadow traffic), with one lookup.
    func route(_ name: String, _ selector: Inferwire_V1_VersionSelector?, routingKey: String) throws(InferWireError)
        -> (model: LoadedModel, entry: ModelRegistry.ModelEntry)
    {
        guard let entry = self.models[name] else {
            throw InferWireError(code: .notFound, message: "model '\(name)' is not in the repository")
        }
        if let failure = entry.failure {
            throw InferWireError(code: .unavailable, message: "model '\(name)' failed to load: \(failure)")
        }
        // Only for error messages: built when one is thrown, not per request.
        func loaded() -> String { entry.readyVersions.map(String.init).joined(separator: ", ") }
        switch selector?.selector {
        case .version(let version)?:
            if let model = entry.versions[version] { return (model, entry) }
            if let reason = entry.failedVersions[version] {
                throw InferWireError(
                    code: .unavailable, message: "model '\(name)' version \(version) failed to load: \(reason)")
            }
            throw InferWireError(
                code: .notFound, message: "model '\(name)' has no version \(version) (loaded: \(loaded()))")
        case .label(let label)?:
            switch label {
            case "stable":
                break
            case "canary":
                guard let canary = entry.canary, let model = entry.versions[canary] else {
                    throw InferWireError(code: .notFound, message: "model '\(name)' has no canary version")
                }
                return (model, entry)
            default:
                throw InferWireError(
                    code: .invalidArgument, message: "unknown version label '\(label)' (labels: stable, canary)")
            }
        case nil:
            // Unlabelled traffic: the canary's share, by key or at random.
            if let canary = entry.canary, entry.canaryPercent > 0, let model = entry.versions[canary] {
                let draw = entry.sticky && !routingKey.isEmpty ? Self.bucket(routingKey) : Int.random(in: 0..<100)
                if draw < entry.canaryPercent { return (model, entry) }
            }
        }
        guard let stable = entry.stable, let model = entry.versions[stable] else {
            if let stable = entry.stable, !entry.versions.isEmpty {
                // The shared rollout names a version this replica has not loaded (yet).
                let why = entry.failedVersions[stable].map { "it failed to load: \($0)" } ?? "it is not loaded"
                throw InferWireError(
                    code: .unavailable,
                    message:
                        "model '\(name)' version \(stable) is stable, but \(why) on this server (loaded: \(loaded()))")
            }
            // Say why: the versions that failed to load carry the loader's reasons.
            let failed = entry.failedVersions.sorted { $0.key < $1.key }.map {
                "version \($0.key) failed to load: \($0.value)"
            }
            throw InferWireError(
                code: .unavailable,
                message: "model '\(name)' has no ready version"
                    + (failed.isEmpty ? "" : "; " + failed.joined(separator: "; ")))
        }
        return (model, entry)
    }
}
