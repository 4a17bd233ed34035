public import InferWireCore
import Foundation
public import InferWireProto
public import Logging
import Synchronization

/// Loads, unloads and routes model versions while the server serves: the versioned
/// repository's state machine behind the management service.
///
/// Every change is made under one lock and published to the ``ModelRegistry`` as a new
/// routing snapshot, so requests see the old routing or the new one, never a mix.
/// Requests already admitted keep their version alive (they hold a reference to it) until
/// they finish: a promote, rollback or unload fails no request. Loading runs on its own
/// thread, so it stalls no other model. Rollout state (stable, canary, share, history)
/// persists in a JSON file under the repository, written atomically.
public final class ModelManager: Sendable {
    /// How the manager keeps its state.
    public struct Configuration: Sendable {
        /// Where rollout state persists; nil keeps it in memory only.
        public var statePath: String?
        /// History entries kept per model.
        public var historyLimit: Int

        public init(statePath: String? = nil, historyLimit: Int = 200) {
            self.statePath = statePath
            self.historyLimit = historyLimit
        }
    }

    struct VersionRecord: Sendable {
        var state: Inferwire_V1_VersionState
        var reason = ""
        var model: LoadedModel?
    }

    struct ModelRecord: Sendable {
        var versions: [Int64: VersionRecord] = [:]
        var stable: Int64?
        var canary: Int64?
        var canaryPercent = 0
        var sticky = false
        var previousStable: Int64?
        var shadow: ShadowTally?
        var shadowPercent = 0
        var history: [Inferwire_V1_HistoryEntry] = []
        var failure: String?
        /// Counts promotions, so a pending grace-period unload knows whether it still applies.
        var promotions = 0
        var settings = Inferwire_V1_RolloutSettings()
    }

    public let repository: ModelRepository
    public let registry: ModelRegistry
    private let configuration: Configuration
    private let logger: Logger
    private let state = Mutex<[String: ModelRecord]>([:])
    /// Serialises writes of the state file.
    private let persisting = Mutex(())

    public init(repository: ModelRepository, registry: ModelRegistry = ModelRegistry(), configuration: Configuration = .init(), logger: Logger) {
        self.repository = repository
        self.registry = registry
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: Start-up

    /// Loads every model and version the repository holds, then applies the persisted
    /// rollout state (falling back to the highest version as stable).
    public func start() throws {
        let contents = try self.repository.loadAll(logger: self.logger)
        let persisted = self.readState()
        self.state.withLock { records in
            for model in contents.models {
                records[model.name, default: ModelRecord()].versions[model.version] = VersionRecord(state: .ready, model: model)
            }
            for failure in contents.failures {
                if let version = failure.version {
                    records[failure.model, default: ModelRecord()].versions[version] = VersionRecord(state: .failed, reason: failure.reason)
                } else {
                    records[failure.model, default: ModelRecord()].failure = failure.reason
                }
            }
            for (name, var record) in records {
                if let config = try? self.repository.readConfig(model: name) { record.settings = config.rollout }
                let ready = record.versions.filter { $0.value.state == .ready }.keys
                record.stable = ready.max()
                if let saved = persisted?.models[name] {
                    if let s = saved.stable, ready.contains(s) { record.stable = s }
                    if let c = saved.canary, ready.contains(c), c != record.stable {
                        record.canary = c
                        record.canaryPercent = min(max(saved.canaryPercent, 0), 100)
                        record.sticky = saved.sticky
                    }
                    if let p = saved.previousStable, ready.contains(p) { record.previousStable = p }
                    record.history = saved.history.map(\.entry)
                }
                records[name] = record
            }
            for name in records.keys {
                self.note(&records[name]!, model: name, action: "restore", detail: Self.describe(records[name]!), actor: "startup")
            }
            self.publish(records)
        }
        self.persist()
    }

    // MARK: Operations

    /// Loads one version off the serving path and marks it READY (or FAILED with the reason).
    public func load(_ name: String, version: Int64, actor: String = "api") async throws(InferWireError) -> Inferwire_V1_VersionStatus {
        let config: Inferwire_V1_ModelConfig
        do {
            config = try self.repository.readConfig(model: name)
        } catch {
            throw InferWireError(code: .notFound, message: "model '\(name)': \((error as? InferWireError)?.message ?? "\(error)")")
        }
        let already: Inferwire_V1_VersionStatus? = try self.state.withLock { records throws(InferWireError) in
            if let existing = records[name]?.versions[version], existing.state == .ready || existing.state == .loading {
                return Self.status(version, existing)
            }
            records[name, default: ModelRecord()].versions[version] = VersionRecord(state: .loading)
            return nil
        }
        if let already { return already }

        // Load on a thread of its own: a large model must not hold up anything else.
        let repository = self.repository
        let result: Result<LoadedModel, any Error> = await Self.onOwnThread {
            Result { try repository.load(model: name, version: version, config: config) }
        }
        let status = self.state.withLock { records -> Inferwire_V1_VersionStatus in
            var record = records[name] ?? ModelRecord()
            switch result {
            case .success(let model):
                record.versions[version] = VersionRecord(state: .ready, model: model)
                if record.stable == nil { record.stable = version }
                self.note(&record, model: name, action: "load", detail: "version \(version) ready", actor: actor)
            case .failure(let error):
                let reason = (error as? InferWireError)?.message ?? "\(error)"
                record.versions[version] = VersionRecord(state: .failed, reason: reason)
                self.note(&record, model: name, action: "failed-load", detail: "version \(version): \(reason)", actor: actor)
                self.logger.error("model version failed to load", metadata: ["model": "\(name)", "version": "\(version)", "reason": "\(reason)"])
            }
            records[name] = record
            self.publish(records)
            return Self.status(version, record.versions[version]!)
        }
        self.persist()
        return status
    }

    /// Takes a version out of routing, lets its queued and running requests finish, and
    /// releases it. The stable and canary versions cannot be unloaded.
    public func unload(_ name: String, version: Int64, actor: String = "api") async throws(InferWireError) -> Inferwire_V1_VersionStatus {
        let model: LoadedModel = try self.state.withLock { records throws(InferWireError) in
            guard var record = records[name] else { throw InferWireError(code: .notFound, message: "model '\(name)' is not in the repository") }
            guard let entry = record.versions[version], entry.state == .ready, let model = entry.model else {
                throw InferWireError(code: .failedPrecondition, message: "model '\(name)' version \(version) is not loaded")
            }
            guard record.stable != version, record.canary != version, record.shadow?.version != version else {
                throw InferWireError(
                    code: .failedPrecondition,
                    message: "model '\(name)' version \(version) is \(record.stable == version ? "stable" : "the canary"); promote or roll back first")
            }
            if record.previousStable == version { record.previousStable = nil }
            record.versions[version] = VersionRecord(state: .draining, model: model)
            self.note(&record, model: name, action: "unload", detail: "version \(version) draining", actor: actor)
            records[name] = record
            self.publish(records)
            return model
        }
        // Off the routing table now; wait for its queue to drain, off any event loop.
        model.scheduler.shutdown()
        await Self.onOwnThread { model.scheduler.waitUntilStopped() }
        let status = self.state.withLock { records -> Inferwire_V1_VersionStatus in
            records[name]?.versions[version] = VersionRecord(state: .unloaded)
            self.publish(records)
            return Self.status(version, records[name]!.versions[version]!)
        }
        self.persist()
        return status
    }

    /// Sends `percent` % of unlabelled requests to `canary` (0 clears the canary).
    public func setTraffic(_ name: String, canary: Int64, percent: Int, sticky: Bool, actor: String = "api") throws(InferWireError) -> Inferwire_V1_Rollout {
        try Self.checkPercent(percent)
        let rollout = try self.change(name, actor: actor) { record throws(InferWireError) -> (String, String) in
            if canary == 0 {
                record.canary = nil
                record.canaryPercent = 0
                return ("traffic", "canary cleared")
            }
            try Self.checkCandidate(record, name, canary)
            record.canary = canary
            record.canaryPercent = percent
            record.sticky = sticky
            return ("traffic", "canary version \(canary) at \(percent)%\(sticky ? ", sticky" : "")")
        }
        return rollout
    }

    /// Mirrors `percent` % of the stable version's unlabelled requests to `version`,
    /// comparing its answers with stable's without returning them (0 stops shadowing).
    public func setShadow(_ name: String, version: Int64, percent: Int, actor: String = "api") throws(InferWireError) -> Inferwire_V1_Rollout {
        try Self.checkPercent(percent)
        return try self.change(name, actor: actor) { record throws(InferWireError) -> (String, String) in
            if version == 0 {
                record.shadow = nil
                record.shadowPercent = 0
                return ("shadow", "shadowing stopped")
            }
            try Self.checkCandidate(record, name, version)
            record.shadow = ShadowTally(version: version)
            record.shadowPercent = percent
            return ("shadow", "version \(version) shadows \(percent)% of stable's traffic")
        }
    }

    private static func checkPercent(_ percent: Int) throws(InferWireError) {
        guard (0...100).contains(percent) else {
            throw InferWireError(code: .invalidArgument, message: "percent must be 0 to 100, got \(percent)")
        }
    }

    /// A canary or shadow must be loaded, ready, and not the stable version.
    private static func checkCandidate(_ record: ModelRecord, _ name: String, _ version: Int64) throws(InferWireError) {
        guard record.versions[version]?.state == .ready else {
            throw InferWireError(code: .failedPrecondition, message: "model '\(name)' version \(version) is not loaded and ready")
        }
        guard record.stable != version else {
            throw InferWireError(code: .failedPrecondition, message: "model '\(name)' version \(version) is already stable")
        }
    }

    /// Runs blocking work (a model load, a queue drain) on a thread of its own, so it holds
    /// up neither an event loop nor the concurrency pool.
    private static func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: work()) }
        }
    }

    /// The canary becomes stable; the old stable stays loaded for ``rollback(_:actor:)``
    /// during the rollback grace period, then is unloaded.
    public func promote(_ name: String, actor: String = "api") throws(InferWireError) -> Inferwire_V1_Rollout {
        let rollout = try self.change(name, actor: actor) { record throws(InferWireError) -> (String, String) in
            guard let canary = record.canary else {
                throw InferWireError(code: .failedPrecondition, message: "model '\(name)' has no canary to promote")
            }
            return Self.makeStable(&record, canary, action: "promote")
        }
        self.scheduleGraceUnload(name)
        return rollout
    }

    private static func makeStable(_ record: inout ModelRecord, _ version: Int64, action: String) -> (String, String) {
        let old = record.stable
        record.previousStable = old
        record.stable = version
        if record.canary == version {
            record.canary = nil
            record.canaryPercent = 0
        }
        record.promotions += 1
        return (action, "version \(version) stable (was \(old.map(String.init) ?? "none"))")
    }

    /// After the grace period, unloads the previous stable version unless a later
    /// promotion or a rollback changed things meanwhile.
    private func scheduleGraceUnload(_ name: String) {
        let (generation, previous, seconds) = self.state.withLock { records in
            (records[name]?.promotions ?? 0, records[name]?.previousStable, records[name]?.settings.rollbackGraceSeconds ?? 0)
        }
        guard let previous else { return }
        let grace = Duration.seconds(seconds > 0 ? seconds : 600)
        Task { [weak self] in
            try? await Task.sleep(for: grace)
            guard let self else { return }
            let still = self.state.withLock { records in
                records[name]?.promotions == generation && records[name]?.previousStable == previous
                    && records[name]?.stable != previous && records[name]?.canary != previous
            }
            if still { _ = try? await self.unload(name, version: previous, actor: "grace-period") }
        }
    }

    /// Loads versions the repository gained since the last look (per each model's version
    /// policy) and gives each its configured role. A version that fails to load — a
    /// directory still being copied, say — stays FAILED, is never served, and is tried
    /// again on the next poll.
    public func poll() async {
        let root = self.repository.directory
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        for name in names {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root + "/" + name, isDirectory: &isDirectory), isDirectory.boolValue,
                let config = try? self.repository.readConfig(model: name)
            else { continue }
            let wanted = ModelRepository.select(
                (try? self.repository.versions(model: name)) ?? [], policy: config.hasVersionPolicy ? config.versionPolicy : nil)
            let present = self.state.withLock { records in
                Set((records[name]?.versions ?? [:]).filter { [.ready, .loading, .draining].contains($0.value.state) }.keys)
            }
            for version in wanted where !present.contains(version) {
                guard let status = try? await self.load(name, version: version, actor: "poller"), status.state == .ready else { continue }
                self.assignRole(name, version: version, settings: config.rollout)
            }
        }
    }

    /// Gives a newly found version the role its model's rollout settings name.
    private func assignRole(_ name: String, version: Int64, settings: Inferwire_V1_RolloutSettings) {
        var promoted = false
        _ = try? self.change(name, actor: "poller") { record throws(InferWireError) -> (String, String) in
            record.settings = settings
            guard record.stable != version else { return ("traffic", "version \(version) is the first and stable") }
            switch settings.newVersionRole {
            case .stable:
                promoted = true
                return Self.makeStable(&record, version, action: "promote")
            case .none:
                return ("traffic", "version \(version) loaded; routed only by number")
            default:
                let percent = settings.canaryPercent > 0 ? Int(min(settings.canaryPercent, 100)) : 10
                record.canary = version
                record.canaryPercent = percent
                return ("traffic", "canary version \(version) at \(percent)%")
            }
        }
        if promoted { self.scheduleGraceUnload(name) }
    }

    /// Undoes the last step at once: drops the canary if there is one, else restores the
    /// previous stable version (still loaded, so no reload).
    public func rollback(_ name: String, actor: String = "api", reason: String = "") throws(InferWireError) -> Inferwire_V1_Rollout {
        try self.change(name, actor: actor) { record throws(InferWireError) -> (String, String) in
            let why = reason.isEmpty ? "" : ": \(reason)"
            if let canary = record.canary {
                record.canary = nil
                record.canaryPercent = 0
                return (actor == "guard" ? "auto-rollback" : "rollback", "canary version \(canary) withdrawn\(why)")
            }
            guard let previous = record.previousStable, record.versions[previous]?.state == .ready else {
                throw InferWireError(code: .failedPrecondition, message: "model '\(name)' has no canary and no previous stable version to roll back to")
            }
            let current = record.stable
            record.stable = previous
            record.previousStable = current
            return ("rollback", "version \(previous) stable again (was \(current.map(String.init) ?? "none"))\(why)")
        }
    }

    /// Compares every guarded canary with its stable version over the guard's window and
    /// rolls back a canary that breaches a threshold, recording why. Returns the models
    /// rolled back.
    @discardableResult
    public func checkGuards() -> [String] {
        let candidates = self.state.withLock { records in
            records.compactMap { name, record -> (String, Inferwire_V1_RolloutGuard, LoadedModel, LoadedModel)? in
                guard record.settings.hasGuard, let c = record.canary, let s = record.stable,
                    let canary = record.versions[c]?.model, let stable = record.versions[s]?.model
                else { return nil }
                return (name, record.settings.guard, canary, stable)
            }
        }
        var rolledBack: [String] = []
        let epoch = SlidingWindow.epoch()
        for (name, guardSettings, canary, stable) in candidates {
            let span = guardSettings.windowSeconds > 0 ? Int(guardSettings.windowSeconds) : 30
            let minimum = guardSettings.minRequests > 0 ? UInt64(guardSettings.minRequests) : 50
            let c = canary.scheduler.statistics.withLock { $0.window.summary(epoch: epoch, span: span) }
            let s = stable.scheduler.statistics.withLock { $0.window.summary(epoch: epoch, span: span) }
            guard c.requests >= minimum else { continue }
            let canaryRate = Double(c.failures) / Double(c.requests)
            let stableRate = s.requests > 0 ? Double(s.failures) / Double(s.requests) : 0
            var reason: String?
            if guardSettings.maxErrorRateIncrease > 0, canaryRate - stableRate > guardSettings.maxErrorRateIncrease {
                reason = String(format: "canary error rate %.1f%% vs stable %.1f%% over %ds (limit +%.1f points)",
                                canaryRate * 100, stableRate * 100, span, guardSettings.maxErrorRateIncrease * 100)
            } else if guardSettings.maxP99Ratio > 0, s.p99Micros > 0,
                Double(c.p99Micros) > guardSettings.maxP99Ratio * Double(s.p99Micros) {
                reason = "canary p99 ≤\(c.p99Micros) µs vs stable ≤\(s.p99Micros) µs over \(span)s (limit \(guardSettings.maxP99Ratio)×)"
            }
            if let reason, (try? self.rollback(name, actor: "guard", reason: reason)) != nil {
                rolledBack.append(name)
            }
        }
        return rolledBack
    }

    // MARK: Queries

    public func status(_ name: String) throws(InferWireError) -> Inferwire_V1_ModelStatus {
        try self.state.withLock { records throws(InferWireError) in
            guard let record = records[name] else { throw InferWireError(code: .notFound, message: "model '\(name)' is not in the repository") }
            return Self.modelStatus(name, record)
        }
    }

    public func list() -> [Inferwire_V1_ModelStatus] {
        self.state.withLock { records in records.keys.sorted().map { Self.modelStatus($0, records[$0]!) } }
    }

    public func history(_ name: String) throws(InferWireError) -> [Inferwire_V1_HistoryEntry] {
        try self.state.withLock { records throws(InferWireError) in
            if name.isEmpty { return records.values.flatMap(\.history).sorted { $0.unixMillis < $1.unixMillis } }
            guard let record = records[name] else { throw InferWireError(code: .notFound, message: "model '\(name)' is not in the repository") }
            return record.history
        }
    }

    /// Stops every loaded version's instance threads (server shutdown).
    public func stopAll() {
        let models = self.state.withLock { records in records.values.flatMap { $0.versions.values.compactMap(\.model) } }
        for model in models { model.scheduler.shutdown() }
    }

    // MARK: Internals

    /// Applies a routing change to one model, records it, publishes and persists it.
    private func change(
        _ name: String, actor: String, _ body: (inout ModelRecord) throws(InferWireError) -> (String, String)
    ) throws(InferWireError) -> Inferwire_V1_Rollout {
        let rollout = try self.state.withLock { records throws(InferWireError) -> Inferwire_V1_Rollout in
            guard var record = records[name] else { throw InferWireError(code: .notFound, message: "model '\(name)' is not in the repository") }
            let (action, detail) = try body(&record)
            self.note(&record, model: name, action: action, detail: detail, actor: actor)
            records[name] = record
            self.publish(records)
            return Self.rollout(record)
        }
        self.persist()
        return rollout
    }

    private func note(_ record: inout ModelRecord, model: String, action: String, detail: String, actor: String) {
        var entry = Inferwire_V1_HistoryEntry()
        entry.unixMillis = Int64(Date().timeIntervalSince1970 * 1000)
        entry.model = model
        entry.action = action
        entry.detail = detail
        entry.actor = actor
        record.history.append(entry)
        if record.history.count > self.configuration.historyLimit {
            record.history.removeFirst(record.history.count - self.configuration.historyLimit)
        }
        self.logger.info("\(action): \(detail)", metadata: ["model": "\(model)", "actor": "\(actor)"])
    }

    /// Builds the routing snapshot from the records and swaps it in (called under the lock).
    private func publish(_ records: [String: ModelRecord]) {
        var snapshot = ModelRegistry.Snapshot()
        for (name, record) in records {
            var entry = ModelRegistry.ModelEntry()
            for (version, v) in record.versions {
                if v.state == .ready, let model = v.model { entry.versions[version] = model }
                if v.state == .failed { entry.failedVersions[version] = v.reason }
            }
            entry.failure = record.failure
            entry.stable = record.stable
            entry.canary = record.canary
            entry.canaryPercent = record.canaryPercent
            entry.sticky = record.sticky
            if let shadow = record.shadow, record.versions[shadow.version]?.state == .ready {
                entry.shadow = shadow
                entry.shadowPercent = record.shadowPercent
            }
            snapshot.models[name] = entry
        }
        self.registry.update { $0 = snapshot }
    }

    static func status(_ version: Int64, _ record: VersionRecord) -> Inferwire_V1_VersionStatus {
        var status = Inferwire_V1_VersionStatus()
        status.version = version
        status.state = record.state
        status.reason = record.reason
        if let model = record.model {
            let stats = model.scheduler.statistics.withLock { $0 }
            status.requestCount = stats.requests
            status.failureCount = stats.failures
            status.meanComputeUs = stats.requests > 0 ? stats.computeMicros / stats.requests : 0
        }
        return status
    }

    static func rollout(_ record: ModelRecord) -> Inferwire_V1_Rollout {
        var rollout = Inferwire_V1_Rollout()
        rollout.stableVersion = record.stable ?? 0
        rollout.canaryVersion = record.canary ?? 0
        rollout.canaryPercent = UInt32(record.canaryPercent)
        rollout.sticky = record.sticky
        rollout.previousStableVersion = record.previousStable ?? 0
        rollout.shadowVersion = record.shadow?.version ?? 0
        rollout.shadowPercent = UInt32(record.shadowPercent)
        return rollout
    }

    static func modelStatus(_ name: String, _ record: ModelRecord) -> Inferwire_V1_ModelStatus {
        var status = Inferwire_V1_ModelStatus()
        status.name = name
        status.versions = record.versions.keys.sorted().map { Self.status($0, record.versions[$0]!) }
        status.rollout = Self.rollout(record)
        if let shadow = record.shadow { status.shadow = shadow.report }
        return status
    }

    static func describe(_ record: ModelRecord) -> String {
        "stable \(record.stable.map(String.init) ?? "none")"
            + (record.canary.map { ", canary \($0) at \(record.canaryPercent)%" } ?? "")
    }

    // MARK: Persistence

    struct PersistedState: Codable {
        struct Model: Codable {
            var stable: Int64?
            var canary: Int64?
            var canaryPercent: Int
            var sticky: Bool
            var previousStable: Int64?
            var history: [Entry]
        }
        struct Entry: Codable {
            var unixMillis: Int64
            var action: String
            var detail: String
            var actor: String
            var model: String

            var entry: Inferwire_V1_HistoryEntry {
                var e = Inferwire_V1_HistoryEntry()
                e.unixMillis = self.unixMillis
                e.action = self.action
                e.detail = self.detail
                e.actor = self.actor
                e.model = self.model
                return e
            }
        }
        var format = 1
        var models: [String: Model]
    }

    /// The persisted state, or nil. A file that does not parse is logged, moved aside
    /// (never deleted) and ignored.
    private func readState() -> PersistedState? {
        guard let path = self.configuration.statePath, FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            return try JSONDecoder().decode(PersistedState.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            let aside = path + ".corrupt-\(Int(Date().timeIntervalSince1970))"
            try? FileManager.default.moveItem(atPath: path, toPath: aside)
            self.logger.error("rollout state file is corrupt; starting from config defaults (file kept as \(aside))", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// Writes the state: a temporary file, fsync, then rename over the old one.
    private func persist() {
        guard let path = self.configuration.statePath else { return }
        self.persisting.withLock { _ in self.write(to: path) }
    }

    private func write(to path: String) {
        let state = self.state.withLock { records in
            PersistedState(models: records.mapValues { r in
                PersistedState.Model(
                    stable: r.stable, canary: r.canary, canaryPercent: r.canaryPercent, sticky: r.sticky,
                    previousStable: r.previousStable,
                    history: r.history.map { .init(unixMillis: $0.unixMillis, action: $0.action, detail: $0.detail, actor: $0.actor, model: $0.model) })
            })
        }
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(state)
            let temporary = path + ".tmp-\(UUID().uuidString)"
            guard FileManager.default.createFile(atPath: temporary, contents: nil) else {
                throw InferWireError(code: .internal, message: "cannot create \(temporary)")
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
            guard rename(temporary, path) == 0 else {
                throw InferWireError(code: .internal, message: "cannot rename \(temporary) to \(path): errno \(errno)")
            }
        } catch {
            self.logger.error("cannot persist rollout state", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }
}
