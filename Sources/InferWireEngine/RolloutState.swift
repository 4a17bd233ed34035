public import Foundation
public import InferWireCore
public import InferWireProto

/// Who changed a rollout. History entries and logs print ``name``.
public enum RolloutActor: Sendable, Hashable {
    /// A management call.
    case api
    /// The canary guard.
    case `guard`
    /// The repository poller.
    case poller
    /// Server start-up.
    case startup
    /// The timer that unloads an old stable version after the rollback grace period.
    case graceTimer
    /// A management call by an authenticated principal.
    case principal(String)
    /// A change another replica made, applied here from the shared state.
    case fleet

    /// The word history entries and logs record.
    public var name: String {
        switch self {
        case .api: "api"
        case .guard: "guard"
        case .poller: "poller"
        case .startup: "startup"
        case .graceTimer: "grace-period"
        case .principal: "api"
        case .fleet: "fleet"
        }
    }

    /// The authenticated principal behind a management call; empty for every other actor.
    public var principal: String {
        if case .principal(let name) = self { name } else { "" }
    }
}

/// Where a model version is in its life.
public enum VersionPhase: Sendable, Hashable {
    case loading
    case ready
    case failed(reason: String)
    case draining
    case unloaded

    /// The wire's name for the phase.
    public var wire: Inferwire_V1_VersionState {
        switch self {
        case .loading: .loading
        case .ready: .ready
        case .failed: .failed
        case .draining: .draining
        case .unloaded: .unloaded
        }
    }

    /// Why the version failed, or "".
    public var reason: String {
        if case .failed(let reason) = self { return reason }
        return ""
    }
}

/// One recorded rollout change.
public struct RolloutHistoryEntry: Sendable, Hashable, Codable {
    public var unixMillis: Int64
    public var action: String
    public var detail: String
    public var actor: String
    public var model: String
    /// The authenticated principal behind an "api" change; empty otherwise.
    public var principal: String

    public init(unixMillis: Int64, action: String, detail: String, actor: String, model: String, principal: String = "")
    {
        self.unixMillis = unixMillis
        self.action = action
        self.detail = detail
        self.actor = actor
        self.model = model
        self.principal = principal
    }

    private enum CodingKeys: String, CodingKey {
        case unixMillis, action, detail, actor, model, principal
    }

    public init(from decoder: any Swift.Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.unixMillis = try container.decode(Int64.self, forKey: .unixMillis)
        self.action = try container.decode(String.self, forKey: .action)
        self.detail = try container.decode(String.self, forKey: .detail)
        self.actor = try container.decode(String.self, forKey: .actor)
        self.model = try container.decode(String.self, forKey: .model)
        // State files written before principals were recorded have none.
        self.principal = try container.decodeIfPresent(String.self, forKey: .principal) ?? ""
    }

    /// The entry as the management service sends it.
    public var wire: Inferwire_V1_HistoryEntry {
        var entry = Inferwire_V1_HistoryEntry()
        entry.unixMillis = self.unixMillis
        entry.action = self.action
        entry.detail = self.detail
        entry.actor = self.actor
        entry.model = self.model
        entry.principal = self.principal
        return entry
    }
}

/// Something that happens to a model's rollout.
public enum RolloutEvent: Sendable, Equatable {
    /// The canary becomes stable.
    case promote
    /// Drops the canary, or else restores the previous stable version.
    case rollback(reason: String)
    /// Sends `percent` % of unlabelled requests to `canary`; canary 0 clears it.
    case setTraffic(canary: Int64, percent: Int, sticky: Bool)
    /// Mirrors `percent` % of stable's unlabelled requests to `version`; 0 stops it.
    case setShadow(version: Int64, percent: Int)
    /// The canary guard withdraws the canary, saying why.
    case guardRollback(reason: String)
    case versionLoading(Int64)
    case versionReady(Int64)
    case versionFailed(Int64, reason: String)
    /// A version leaves routing and drains its queue.
    case versionDraining(Int64)
    case versionUnloaded(Int64)
    /// The rollback grace period after promotion number `promotion` ended; `version` was
    /// the stable version that promotion replaced.
    case graceExpired(version: Int64, promotion: Int)
    /// The poller loaded a new version; it takes the role `settings` give it.
    case versionFound(Int64, settings: Inferwire_V1_RolloutSettings)
    /// Start-up: stable is the highest ready version unless the persisted state names
    /// another that is ready.
    case restore(PersistedRollout?)
    /// The fleet's shared rollout changed (through this replica or another): routing
    /// follows it, whether or not its versions are ready here.
    case adopt(PersistedRollout)
}

/// What the owner of a ``RolloutState`` must do after a transition.
public enum RolloutEffect: Sendable, Equatable {
    /// Swap a new routing snapshot into the registry.
    case publishRouting
    /// Save the persisted form.
    case persist
    /// After `delay`, deliver ``RolloutEvent/graceExpired(version:promotion:)``.
    case scheduleGraceUnload(version: Int64, delay: Duration, promotion: Int)
    /// Take `version` out of routing, drain and release it.
    case unload(version: Int64)
    /// Log the history entry just recorded.
    case log(RolloutHistoryEntry)
    /// The shared rollout names `version`, which this replica has not loaded: load it.
    case ensureLoaded(version: Int64)
}

/// One model's rollout as a value: its versions' phases, which version serves as stable,
/// canary and shadow, and what happened. Transitions are plain functions of the current
/// value and an event; they return the effects for the caller to perform (outside any lock).
public struct RolloutState: Sendable, Equatable {
    public let model: String
    public private(set) var phases: [Int64: VersionPhase] = [:]
    /// Why the whole model failed (a bad config), if it did.
    public var failure: String?
    public private(set) var stable: Int64?
    public private(set) var canary: Int64?
    public private(set) var canaryPercent = 0
    public private(set) var sticky = false
    public private(set) var previousStable: Int64?
    public private(set) var shadow: Int64?
    public private(set) var shadowPercent = 0
    public private(set) var history: [RolloutHistoryEntry] = []
    /// History entries kept.
    public let historyLimit: Int
    /// Counts promotions, so a grace-period unload knows whether it still applies.
    public private(set) var promotions = 0
    /// The highest version the repository poller gave a role (``PersistedRollout/newest``).
    public private(set) var newest: Int64?
    /// The model config's rollout settings.
    public var settings: Inferwire_V1_RolloutSettings

    public init(
        model: String, phases: [Int64: VersionPhase] = [:], settings: Inferwire_V1_RolloutSettings = .init(),
        historyLimit: Int = 200
    ) {
        self.model = model
        self.phases = phases
        self.settings = settings
        self.historyLimit = historyLimit
    }

    /// Applies `event`; on error the state is unchanged.
    /// - Returns: the effects to perform, in order.
    public mutating func apply(_ event: RolloutEvent, by actor: RolloutActor, at time: Date) throws(InferWireError)
        -> [RolloutEffect]
    {
        var next = self
        let effects = try next.transition(event, by: actor, at: time)
        self = next
        return effects
    }

    private mutating func transition(_ event: RolloutEvent, by actor: RolloutActor, at time: Date)
        throws(InferWireError) -> [RolloutEffect]
    {
        switch event {
        case .versionLoading(let version):
            self.phases[version] = .loading
            return []

        case .versionReady(let version):
            self.phases[version] = .ready
            if self.stable == nil { self.stable = version }
            return self.record("load", "version \(version) ready", actor, time) + [.persist]

        case .versionFailed(let version, let reason):
            self.phases[version] = .failed(reason: reason)
            return self.record("failed-load", "version \(version): \(reason)", actor, time) + [.persist]

        case .versionDraining(let version):
            guard self.phases[version] == .ready else {
                throw InferWireError(
                    code: .failedPrecondition, message: "model '\(self.model)' version \(version) is not loaded")
            }
            guard self.stable != version, self.canary != version, self.shadow != version else {
                let role = self.stable == version ? "stable" : self.canary == version ? "the canary" : "the shadow"
                throw InferWireError(
                    code: .failedPrecondition,
                    message: "model '\(self.model)' version \(version) is \(role); promote or roll back first")
            }
            if self.previousStable == version { self.previousStable = nil }
            self.phases[version] = .draining
            return self.record("unload", "version \(version) draining", actor, time)

        case .versionUnloaded(let version):
            self.phases[version] = .unloaded
            return [.publishRouting, .persist]

        case .setTraffic(let canary, let percent, let sticky):
            try Self.checkPercent(percent)
            if canary == 0 {
                self.canary = nil
                self.canaryPercent = 0
                return self.record("traffic", "canary cleared", actor, time) + [.persist]
            }
            try self.checkCandidate(canary)
            self.canary = canary
            self.canaryPercent = percent
            self.sticky = sticky
            return self.record(
                "traffic", "canary version \(canary) at \(percent)%\(sticky ? ", sticky" : "")", actor, time) + [
                    .persist
                ]

        case .setShadow(let version, let percent):
            try Self.checkPercent(percent)
            if version == 0 {
                self.shadow = nil
                self.shadowPercent = 0
                return self.record("shadow", "shadowing stopped", actor, time) + [.persist]
            }
            try self.checkCandidate(version)
            self.shadow = version
            self.shadowPercent = percent
            return self.record("shadow", "version \(version) shadows \(percent)% of stable's traffic", actor, time) + [
                .persist
            ]

        case .promote:
            guard let canary = self.canary else {
                throw InferWireError(
                    code: .failedPrecondition, message: "model '\(self.model)' has no canary to promote")
            }
            return self.makeStable(canary, action: "promote", actor, time)

        case .rollback(let reason):
            let why = reason.isEmpty ? "" : ": \(reason)"
            if let canary = self.canary {
                self.canary = nil
                self.canaryPercent = 0
                return self.record("rollback", "canary version \(canary) withdrawn\(why)", actor, time) + [.persist]
            }
            guard let previous = self.previousStable, self.phases[previous] == .ready else {
                throw InferWireError(
                    code: .failedPrecondition,
                    message: "model '\(self.model)' has no canary and no previous stable version to roll back to")
            }
            let current = self.stable
            self.stable = previous
            self.previousStable = current
            return self.record(
                "rollback", "version \(previous) stable again (was \(Self.describe(current)))\(why)", actor, time) + [
                    .persist
                ]

        case .guardRollback(let reason):
            guard let canary = self.canary else {
                throw InferWireError(
                    code: .failedPrecondition, message: "model '\(self.model)' has no canary to roll back")
            }
            self.canary = nil
            self.canaryPercent = 0
            return self.record("auto-rollback", "canary version \(canary) withdrawn: \(reason)", actor, time) + [
                .persist
            ]

        case .graceExpired(let version, let promotion):
            // A later promotion, or a rollback that brought `version` back, supersedes this timer.
            guard self.promotions == promotion, self.previousStable == version, self.stable != version,
                self.canary != version, self.shadow != version, self.phases[version] == .ready
            else { return [] }
            return [.unload(version: version)]

        case .versionFound(let version, let settings):
            guard self.phases[version] == .ready else {
                throw InferWireError(
                    code: .failedPrecondition,
                    message: "model '\(self.model)' version \(version) is not loaded and ready")
            }
            self.settings = settings
            // Found before (by another replica, or before a restart): its role was given then.
            if let newest = self.newest, version <= newest { return [] }
            self.newest = version
            if self.stable == version {
                return self.record("traffic", "version \(version) is the first and stable", actor, time) + [.persist]
            }
            switch settings.newVersionRole {
            case .stable:
                return self.makeStable(version, action: "promote", actor, time)
            case .none:
                return self.record("traffic", "version \(version) loaded; routed only by number", actor, time) + [
                    .persist
                ]
            default:
                let percent = ModelConfiguration.RolloutSettings(settings).canaryPercent
                self.canary = version
                self.canaryPercent = percent
                return self.record("traffic", "canary version \(version) at \(percent)%", actor, time) + [.persist]
            }

        case .restore(let saved):
            let ready = Set(self.phases.filter { $0.value == .ready }.keys)
            self.stable = ready.max()
            self.newest = ready.max()
            if let saved {
                if let stable = saved.stable, ready.contains(stable) { self.stable = stable }
                if let canary = saved.canary, ready.contains(canary), canary != self.stable {
                    self.canary = canary
                    self.canaryPercent = min(max(saved.canaryPercent, 0), 100)
                    self.sticky = saved.sticky
                }
                if let previous = saved.previousStable, ready.contains(previous) { self.previousStable = previous }
                if let shadow = saved.shadow, ready.contains(shadow), shadow != self.stable {
                    self.shadow = shadow
                    self.shadowPercent = min(max(saved.shadowPercent, 0), 100)
                }
                self.promotions = saved.promotions
                self.newest = [self.newest, saved.newest].compactMap { $0 }.max()
                self.history = saved.history
            }
            let detail =
                "stable \(Self.describe(self.stable))"
                + (self.canary.map { ", canary \($0) at \(self.canaryPercent)%" } ?? "")
            return self.record("restore", detail, actor, time) + [.persist]

        case .adopt(let shared):
            var effects: [RolloutEffect] = [.publishRouting]
            // A fleet with no stable version yet leaves this replica's choice alone.
            if shared.stable != nil || self.phases.isEmpty { self.stable = shared.stable }
            self.canary = shared.canary
            self.canaryPercent = min(max(shared.canaryPercent, 0), 100)
            self.sticky = shared.sticky
            self.previousStable = shared.previousStable
            self.shadow = shared.shadow
            self.shadowPercent = min(max(shared.shadowPercent, 0), 100)
            self.newest = shared.newest
            let promoted = shared.promotions > self.promotions
            self.promotions = shared.promotions
            for entry in Self.entriesAfter(self.history, in: shared.history) { effects.append(.log(entry)) }
            self.history = shared.history
            if self.history.count > self.historyLimit {
                self.history.removeFirst(self.history.count - self.historyLimit)
            }
            // The previous stable version is not reloaded: each replica unloads it after the grace period.
            for version in Set([self.stable, self.canary, self.shadow].compactMap { $0 }).sorted()
            where self.phases[version] == nil || self.phases[version] == .unloaded {
                effects.append(.ensureLoaded(version: version))
            }
            if promoted, let old = self.previousStable, old != self.stable {
                effects.append(
                    .scheduleGraceUnload(version: old, delay: self.rollbackGrace, promotion: self.promotions))
            }
            return effects
        }
    }

    /// The entries of `new` recorded after the last one of `old` (all of `new` when they
    /// share none): what another replica did since this one last looked.
    static func entriesAfter(_ old: [RolloutHistoryEntry], in new: [RolloutHistoryEntry]) -> [RolloutHistoryEntry] {
        guard let last = old.last else { return new }
        guard let index = new.lastIndex(of: last) else { return new }
        return Array(new[(index + 1)...])
    }

    /// The persisted form of this rollout.
    public var persisted: PersistedRollout {
        PersistedRollout(
            stable: self.stable, canary: self.canary, canaryPercent: self.canaryPercent, sticky: self.sticky,
            previousStable: self.previousStable, shadow: self.shadow, shadowPercent: self.shadowPercent,
            promotions: self.promotions, newest: self.newest, history: self.history)
    }

    /// The rollout as the management service reports it.
    public var wire: Inferwire_V1_Rollout {
        var rollout = Inferwire_V1_Rollout()
        rollout.stableVersion = self.stable ?? 0
        rollout.canaryVersion = self.canary ?? 0
        rollout.canaryPercent = UInt32(self.canaryPercent)
        rollout.sticky = self.sticky
        rollout.previousStableVersion = self.previousStable ?? 0
        rollout.shadowVersion = self.shadow ?? 0
        rollout.shadowPercent = UInt32(self.shadowPercent)
        return rollout
    }

    /// Seconds an old stable version stays loaded after a promotion.
    public var rollbackGrace: Duration {
        ModelConfiguration.RolloutSettings(self.settings).rollbackGrace
    }

    // MARK: Helpers

    private mutating func makeStable(_ version: Int64, action: String, _ actor: RolloutActor, _ time: Date)
        -> [RolloutEffect]
    {
        let old = self.stable
        self.previousStable = old
        self.stable = version
        if self.canary == version {
            self.canary = nil
            self.canaryPercent = 0
        }
        self.promotions += 1
        var effects =
            self.record(action, "version \(version) stable (was \(Self.describe(old)))", actor, time) + [.persist]
        if let old {
            effects.append(.scheduleGraceUnload(version: old, delay: self.rollbackGrace, promotion: self.promotions))
        }
        return effects
    }

    /// Appends a history entry (dropping the oldest past the limit); routing changed.
    private mutating func record(_ action: String, _ detail: String, _ actor: RolloutActor, _ time: Date)
        -> [RolloutEffect]
    {
        let entry = RolloutHistoryEntry(
            unixMillis: Int64(time.timeIntervalSince1970 * 1000), action: action, detail: detail, actor: actor.name,
            model: self.model, principal: actor.principal)
        self.history.append(entry)
        if self.history.count > self.historyLimit { self.history.removeFirst(self.history.count - self.historyLimit) }
        return [.publishRouting, .log(entry)]
    }

    private static func checkPercent(_ percent: Int) throws(InferWireError) {
        guard (0...100).contains(percent) else {
            throw InferWireError(code: .invalidArgument, message: "percent must be 0 to 100, got \(percent)")
        }
    }

    /// A canary or shadow must be loaded, ready, and not the stable version.
    private func checkCandidate(_ version: Int64) throws(InferWireError) {
        guard self.phases[version] == .ready else {
            throw InferWireError(
                code: .failedPrecondition, message: "model '\(self.model)' version \(version) is not loaded and ready")
        }
        guard self.stable != version else {
            throw InferWireError(
                code: .failedPrecondition, message: "model '\(self.model)' version \(version) is already stable")
        }
    }

    private static func describe(_ version: Int64?) -> String {
        version.map(String.init) ?? "none"
    }
}
