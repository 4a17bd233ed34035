public import CoreMetrics
import Foundation
public import InferWireCore
public import InferWireProto
public import Logging
import Synchronization

/// Loads, unloads and routes model versions while the server serves: the versioned
/// repository behind the management service.
///
/// Each model's rollout is a ``RolloutState`` value; every change applies a
/// ``RolloutEvent`` to it under one lock and publishes a new routing snapshot to the
/// ``ModelRegistry``, so requests see the old routing or the new one, never a mix.
/// Requests already admitted keep their version alive (they hold a reference to it) until
/// they finish: a promote, rollback or unload fails no request. Loading runs on its own
/// thread, so it stalls no other model. Rollout state persists through a ``RolloutStore``,
/// off the caller's thread.
///
/// Work that outlives a call — grace-period unloads, management operations handed over by
/// the management service, polling and guard checks — runs inside ``run(pollInterval:guardInterval:)``,
/// which the server's service group runs (`ModelManagerService`).
public final class ModelManager: Sendable {
    /// How the manager keeps its state.
    public struct Configuration: Sendable {
        /// Where rollout state persists as a JSON file; nil keeps it in memory only.
        /// Ignored when ``store`` is set.
        public var statePath: String?
        /// Where rollout state persists; overrides ``statePath``.
        public var store: (any RolloutStore)?
        /// History entries kept per model.
        public var historyLimit: Int
        /// The clock of grace periods and periodic work.
        public var clock: any Clock<Duration>
        /// Where rollout events and model loads are counted (swift-metrics); nil: the
        /// process's `MetricsSystem.factory` when an event happens.
        public var metricsFactory: (any MetricsFactory)?
        /// Share rollout state with other replicas through a store; nil: this replica alone
        /// (``statePath`` or ``store``). Overrides both.
        public var fleet: Fleet?

        public init(
            statePath: String? = nil, store: (any RolloutStore)? = nil, historyLimit: Int = 200,
            clock: any Clock<Duration> = ContinuousClock(), metricsFactory: (any MetricsFactory)? = nil,
            fleet: Fleet? = nil
        ) {
            self.statePath = statePath
            self.store = store
            self.historyLimit = historyLimit
            self.clock = clock
            self.metricsFactory = metricsFactory
            self.fleet = fleet
        }
    }

    /// How a replica shares rollout state with the others.
    public struct Fleet: Sendable {
        /// Where the state is shared.
        public var store: any FleetStateStore
        /// This replica's name in reports and logs; unique in the fleet.
        public var replica: String
        /// When the store cannot be reached at start: true starts from the repository's
        /// defaults (reconciling when it answers); false waits for it.
        public var startWithoutStore: Bool
        /// How often this replica publishes its report and claims the guard's lead.
        public var reportInterval: Duration
        /// How long to wait before trying an unreachable store again.
        public var retryInterval: Duration

        public init(
            store: any FleetStateStore, replica: String, startWithoutStore: Bool = false,
            reportInterval: Duration = .seconds(1), retryInterval: Duration = .seconds(1)
        ) {
            self.store = store
            self.replica = replica
            self.startWithoutStore = startWithoutStore
            self.reportInterval = reportInterval
            self.retryInterval = retryInterval
        }
    }

    /// What this replica knows of the shared state's store.
    struct FleetStatus: Sendable {
        /// Why the store cannot be reached, and since when; nil while it answers.
        var problem: (message: String, since: Date)?
        /// Whether this replica leads the canary guard.
        var leadsGuard = false
        /// The replicas' last reports, read with this replica's own.
        var reports: [ReplicaReport] = []
        /// The replica left the fleet (shutting down): it reports and leads no more.
        var left = false
    }

    /// One model: its rollout value and the loaded versions it refers to.
    struct ModelRecord: Sendable {
        var rollout: RolloutState
        var models: [Int64: LoadedModel] = [:]
        var shadowTally: ShadowTally?
        /// The shared state's revision this replica's routing follows (0: none yet).
        var sharedRevision: Int64 = 0
    }

    /// What metrics report of one model at scrape time: each loaded version's load time.
    public struct ModelFacts: Sendable {
        public var name: String
        public var loadDurations: [Int64: Duration]
    }

    /// The metric name rollout events are counted under, with `model` and `event` dimensions.
    public static let rolloutEventsMetric = "inferwire_rollout_events_total"
    /// The metric name version loads are counted under, with `model` and `result` (`ready`, `failed`).
    public static let loadsMetric = "inferwire_model_loads_total"

    /// The word an event is counted as, for the events metrics count.
    static func countedName(_ event: RolloutEvent) -> String? {
        switch event {
        case .promote: "promote"
        case .rollback: "rollback"
        case .guardRollback: "automatic_rollback"
        default: nil
        }
    }

    func count(_ metric: String, _ dimensions: [(String, String)]) {
        Counter(
            label: metric, dimensions: dimensions, factory: self.configuration.metricsFactory ?? MetricsSystem.factory
        )
        .increment()
    }

    public let repository: ModelRepository
    public let registry: ModelRegistry
    let configuration: Configuration
    let logger: Logger
    let state = Mutex<[String: ModelRecord]>([:])
    private let saves: SaveCoalescer
    /// Work that outlives the call that caused it; run by ``run(pollInterval:guardInterval:)``.
    let work: BackgroundWork
    let fleetStatus = Mutex(FleetStatus())

    public init(
        repository: ModelRepository, registry: ModelRegistry = ModelRegistry(), configuration: Configuration = .init(),
        logger: Logger
    ) {
        self.repository = repository
        self.registry = registry
        self.configuration = configuration
        self.logger = logger
        // A replica of a fleet keeps nothing of its own: the shared store holds the state.
        let store =
            configuration.fleet != nil
            ? InMemoryRolloutStore()
            : configuration.store ?? configuration.statePath.map { FileRolloutStore(path: $0, logger: logger) }
                ?? InMemoryRolloutStore()
        self.saves = SaveCoalescer(store: store)
        self.work = BackgroundWork(clock: configuration.clock)
    }

    // MARK: Start-up and the owned work

    /// Loads every model and version the repository holds, then applies the persisted
    /// rollout state (falling back to the highest version as stable).
    public func start() async throws {
        let contents = try self.repository.loadAll(logger: self.logger)
        for model in contents.models { self.count(Self.loadsMetric, [("model", model.name), ("result", "ready")]) }
        for failure in contents.failures where failure.version != nil {
            self.count(Self.loadsMetric, [("model", failure.model), ("result", "failed")])
        }
        let shared = try await self.loadSharedState()
        let persisted = await self.saves.store.load()
        let now = Date()
        var phases: [String: [Int64: VersionPhase]] = [:]
        var models: [String: [Int64: LoadedModel]] = [:]
        var failures: [String: String] = [:]
        for model in contents.models {
            phases[model.name, default: [:]][model.version] = .ready
            models[model.name, default: [:]][model.version] = model
        }
        for failure in contents.failures {
            if let version = failure.version {
                phases[failure.model, default: [:]][version] = .failed(reason: failure.reason)
            } else {
                phases[failure.model, default: [:]] = phases[failure.model] ?? [:]
                failures[failure.model] = failure.reason
            }
        }
        var effects: [(String, [RolloutEffect])] = []
        let saving = self.state.withLock { records in
            for (name, versions) in phases {
                let settings = (try? self.repository.readConfig(model: name))?.rollout ?? .init()
                var rollout = RolloutState(
                    model: name, phases: versions, settings: settings, historyLimit: self.configuration.historyLimit)
                rollout.failure = failures[name]
                // Restoring cannot fail: saved versions that are not ready are ignored.
                effects.append(
                    (name, (try? rollout.apply(.restore(persisted?.models[name]), by: .startup, at: now)) ?? []))
                records[name] = ModelRecord(rollout: rollout, models: models[name] ?? [:])
            }
            self.publish(records)
            return self.saves.submit(Self.persisted(records))
        }
        for (name, effects) in effects { await self.perform(effects, model: name, by: .startup) }
        await self.saves.flush(through: saving)
        if let shared { await self.reconcile(shared) }
    }

    /// The fleet's shared state at start; nil without a fleet, or when the store cannot be
    /// reached and the replica may start without it. Otherwise waits for the store.
    private func loadSharedState() async throws -> [String: SharedRollout]? {
        guard let fleet = self.configuration.fleet else { return nil }
        var waited = false
        while true {
            do {
                let (rollouts, _) = try await fleet.store.load()
                if waited {
                    self.logger.notice(
                        "the rollout state store answers", metadata: ["store": "\(fleet.store.location)"])
                }
                self.fleetStatus.withLock { $0.problem = nil }
                return rollouts
            } catch {
                self.markUnreachable(error)
                if fleet.startWithoutStore {
                    self.logger.warning(
                        "the rollout state store cannot be reached; starting from the repository's defaults and reconciling when it answers",
                        metadata: ["store": "\(fleet.store.location)", "error": "\(error)"])
                    return nil
                }
                if !waited {
                    self.logger.warning(
                        "waiting for the rollout state store (--state-fallback starts without it)",
                        metadata: ["store": "\(fleet.store.location)", "error": "\(error)"])
                }
                waited = true
                try await self.configuration.clock.sleep(for: fleet.retryInterval)
            }
        }
    }

    /// Runs the manager's owned work until the calling task is cancelled: management
    /// operations handed over by the management service, grace-period unloads, and, when
    /// their intervals are given, repository polls and canary guard checks. On cancellation
    /// it stops timers, answers queued operations UNAVAILABLE and waits for work under way.
    /// Runs once per manager.
    public func run(pollInterval: Duration? = nil, guardInterval: Duration? = .seconds(1)) async {
        var periodic: [(interval: Duration, action: @Sendable () async -> Void)] = []
        if let pollInterval { periodic.append((pollInterval, { await self.poll() })) }
        if let guardInterval { periodic.append((guardInterval, { await self.checkGuards() })) }
        var loops: [@Sendable () async -> Void] = []
        if let fleet = self.configuration.fleet {
            loops.append { await self.followSharedState(fleet) }
            periodic.append((fleet.reportInterval, { await self.report(fleet) }))
        }
        await self.work.run(periodic: periodic, loops: loops)
    }

    /// Withdraws this replica's report and its lead of the canary guard from the shared
    /// store, so the others stop counting it at once: for graceful shutdown, after ``run(pollInterval:guardInterval:)``.
    public func leaveFleet() async {
        guard let fleet = self.configuration.fleet else { return }
        self.fleetStatus.withLock {
            $0.left = true
            $0.leadsGuard = false
        }
        await fleet.store.leave()
    }

    /// Why the shared state's store cannot be reached, and since when; nil when it answers
    /// or there is no fleet.
    public var sharedStateProblem: String? {
        guard let fleet = self.configuration.fleet else { return nil }
        return self.fleetStatus.withLock { status in
            status.problem.map { problem in
                "the rollout state store (\(fleet.store.location)) is unreachable since "
                    + "\(ISO8601DateFormatter().string(from: problem.since)): serving with the last state seen; "
                    + "rollout changes are refused until it answers"
            }
        }
    }

    /// Whether rollout state is shared with other replicas (``Configuration/fleet``).
    public var sharesState: Bool { self.configuration.fleet != nil }

    /// Whether this replica leads the fleet's canary guard (always true without a fleet).
    public var leadsCanaryGuard: Bool {
        self.configuration.fleet == nil || self.fleetStatus.withLock { $0.leadsGuard }
    }

    /// Whether ``run(pollInterval:guardInterval:)`` is running, so handed-over work runs.
    public var isRunning: Bool { self.work.isRunning }

    /// Returns once no operation or timer handed to ``run(pollInterval:guardInterval:)`` is
    /// queued, sleeping or running: for tests, which step a ``ManualClock`` and then wait.
    public func waitUntilIdle() async {
        await self.work.waitUntilIdle()
    }

    /// Runs `operation` inside ``run(pollInterval:guardInterval:)`` and passes its result to
    /// `respond`; when that is not running, answers UNAVAILABLE at once.
    func submit<T: Sendable>(
        _ operation: @escaping @Sendable () async throws(InferWireError) -> T,
        respond: @escaping @Sendable (Result<T, InferWireError>) -> Void
    ) {
        self.work.submit(
            {
                do throws(InferWireError) { respond(.success(try await operation())) } catch {
                    respond(.failure(error))
                }
            },
            refuse: {
                respond(
                    .failure(
                        InferWireError(
                            code: .unavailable, message: "the model manager is not running (starting or shutting down)")
                    ))
            })
    }

    // MARK: Operations

    /// Loads one version off the serving path and marks it READY (or FAILED with the reason).
    public func load(_ name: String, version: Int64, actor: RolloutActor = .api) async throws(InferWireError)
        -> Inferwire_V1_VersionStatus
    {
        let config: Inferwire_V1_ModelConfig
        do {
            config = try self.repository.readConfig(model: name)
        } catch let error as InferWireError {
            throw error
        } catch {
            throw InferWireError(code: .notFound, message: "model '\(name)': \(error)")
        }
        // Refused before any state changes: a version with no directory never shows as loading.
        try self.repository.checkVersionOnDisk(model: name, version: version)
        let already: Inferwire_V1_VersionStatus? = try self.state.withLock { records throws(InferWireError) in
            var record =
                records[name]
                ?? ModelRecord(
                    rollout: RolloutState(
                        model: name, settings: config.rollout, historyLimit: self.configuration.historyLimit))
            if let phase = record.rollout.phases[version], phase == .ready || phase == .loading {
                return Self.status(version, phase, record.models[version])
            }
            _ = try record.rollout.apply(.versionLoading(version), by: actor, at: Date())
            records[name] = record
            return nil
        }
        if let already { return already }

        // Load on a thread of its own: a large model must not hold up anything else.
        let repository = self.repository
        let result: Result<LoadedModel, any Error> = await Self.onOwnThread {
            Result { try repository.load(model: name, version: version, config: config) }
        }
        let event: RolloutEvent
        self.count(Self.loadsMetric, [("model", name), ("result", result.isFailure ? "failed" : "ready")])
        switch result {
        case .success:
            event = .versionReady(version)
        case .failure(let error):
            let reason = (error as? InferWireError)?.message ?? "\(error)"
            event = .versionFailed(version, reason: reason)
            self.logger.error(
                "model version failed to load",
                metadata: ["model": "\(name)", "version": "\(version)", "reason": "\(reason)"])
        }
        let (rollout, _) = try await self.change(name, event, by: actor) { record in
            record.models[version] = try? result.get()
        }
        return Self.status(version, rollout.phases[version] ?? .unloaded, try? result.get())
    }

    /// Takes a version out of routing, lets its queued and running requests finish, and
    /// releases it. The stable, canary and shadow versions cannot be unloaded.
    public func unload(_ name: String, version: Int64, actor: RolloutActor = .api) async throws(InferWireError)
        -> Inferwire_V1_VersionStatus
    {
        let (_, model) = try await self.change(name, .versionDraining(version), by: actor) { record in
            record.models[version]
        }
        // Off the routing table now; wait for its queue to drain, off any event loop.
        if let model {
            model.scheduler.shutdown()
            await Self.onOwnThread { model.scheduler.waitUntilStopped() }
        }
        let (rollout, _) = try await self.change(name, .versionUnloaded(version), by: actor) { record in
            record.models[version] = nil
        }
        return Self.status(version, rollout.phases[version] ?? .unloaded, nil)
    }

    /// Sends `percent` % of unlabelled requests to `canary` (0 clears the canary).
    public func setTraffic(_ name: String, canary: Int64, percent: Int, sticky: Bool, actor: RolloutActor = .api)
        async throws(InferWireError) -> Inferwire_V1_Rollout
    {
        try await self.changeShared(name, .setTraffic(canary: canary, percent: percent, sticky: sticky), by: actor).wire
    }

    /// Mirrors `percent` % of the stable version's unlabelled requests to `version`,
    /// comparing its answers with stable's without returning them (0 stops shadowing).
    public func setShadow(_ name: String, version: Int64, percent: Int, actor: RolloutActor = .api)
        async throws(InferWireError) -> Inferwire_V1_Rollout
    {
        try await self.changeShared(name, .setShadow(version: version, percent: percent), by: actor).wire
    }

    /// The canary becomes stable; the old stable stays loaded for ``rollback(_:actor:reason:)``
    /// during the rollback grace period, then is unloaded.
    public func promote(_ name: String, actor: RolloutActor = .api) async throws(InferWireError) -> Inferwire_V1_Rollout
    {
        try await self.changeShared(name, .promote, by: actor).wire
    }

    /// Undoes the last step at once: drops the canary if there is one, else restores the
    /// previous stable version (still loaded, so no reload).
    public func rollback(_ name: String, actor: RolloutActor = .api, reason: String = "") async throws(InferWireError)
        -> Inferwire_V1_Rollout
    {
        try await self.changeShared(name, .rollback(reason: reason), by: actor).wire
    }

    /// Loads versions the repository gained since the last look (per each model's version
    /// policy) and gives each its configured role. A version that fails to load — a
    /// directory still being copied, say — stays FAILED, is never served, and is tried
    /// again on the next poll.
    public func poll() async {
        let found = RepositoryPoller(repository: self.repository).scan { name in
            self.state.withLock { records in
                Set(
                    (records[name]?.rollout.phases ?? [:]).filter { [.ready, .loading, .draining].contains($0.value) }
                        .keys)
            }
        }
        for discovery in found {
            guard let status = try? await self.load(discovery.model, version: discovery.version, actor: .poller),
                status.state == .ready
            else { continue }
            let found = RolloutEvent.versionFound(discovery.version, settings: discovery.config.rollout)
            do {
                _ = try await self.changeShared(discovery.model, found, by: .poller)
            } catch  where error.code == .aborted {
                // Another replica gave a role first; what it did is adopted, so this may do nothing.
                _ = try? await self.changeShared(discovery.model, found, by: .poller)
            } catch {}
        }
    }

    /// Compares every guarded canary with its stable version over the guard's window ending
    /// at `now` and rolls back a canary that breaches a threshold, recording why.
    /// - Returns: the models rolled back.
    @discardableResult
    public func checkGuards(at now: ContinuousClock.Instant = .now) async -> [String] {
        if self.configuration.fleet != nil { return await self.checkGuardsAcrossFleet() }
        let candidates = self.state.withLock { records in
            records.compactMap { name, record -> (String, CanaryGuard, LoadedModel, LoadedModel)? in
                let rollout = record.rollout
                guard rollout.settings.hasGuard, let c = rollout.canary, let s = rollout.stable,
                    let canary = record.models[c], let stable = record.models[s]
                else { return nil }
                return (name, CanaryGuard(settings: rollout.settings.guard), canary, stable)
            }
        }
        var rolledBack: [String] = []
        let epoch = SlidingWindow.epoch(now)
        for (name, canaryGuard, canary, stable) in candidates.sorted(by: { $0.0 < $1.0 }) {
            let span = canaryGuard.windowSeconds
            let c = canary.scheduler.statistics.withLock { $0.window.summary(epoch: epoch, span: span) }
            let s = stable.scheduler.statistics.withLock { $0.window.summary(epoch: epoch, span: span) }
            guard
                let reason = canaryGuard.verdict(
                    canary: .init(requests: c.requests, failures: c.failures, p99Micros: c.p99Micros),
                    stable: .init(requests: s.requests, failures: s.failures, p99Micros: s.p99Micros))
            else { continue }
            if (try? await self.changeShared(name, .guardRollback(reason: reason), by: .guard)) != nil {
                rolledBack.append(name)
            }
        }
        return rolledBack
    }

    // MARK: Queries

    public func status(_ name: String) throws(InferWireError) -> Inferwire_V1_ModelStatus {
        try self.state.withLock { records throws(InferWireError) in
            guard let record = records[name] else { throw Self.unknown(name) }
            return Self.modelStatus(record)
        }.withReplicas(self.replicaVersions(name))
    }

    public func list() -> [Inferwire_V1_ModelStatus] {
        self.state.withLock { records in records.keys.sorted().map { Self.modelStatus(records[$0]!) } }
            .map { $0.withReplicas(self.replicaVersions($0.name)) }
    }

    /// Rollout counts and load times of every model, by name.
    public func facts() -> [ModelFacts] {
        self.state.withLock { records in
            records.keys.sorted().map { name in
                let record = records[name]!
                return ModelFacts(name: name, loadDurations: record.models.mapValues(\.loadDuration))
            }
        }
    }

    public func history(_ name: String) throws(InferWireError) -> [Inferwire_V1_HistoryEntry] {
        try self.state.withLock { records throws(InferWireError) in
            if name.isEmpty {
                return records.values.flatMap(\.rollout.history).sorted { $0.unixMillis < $1.unixMillis }.map(\.wire)
            }
            guard let record = records[name] else { throw Self.unknown(name) }
            return record.rollout.history.map(\.wire)
        }
    }

    /// One model's rollout value.
    public func rollout(_ name: String) throws(InferWireError) -> RolloutState {
        try self.state.withLock { records throws(InferWireError) in
            guard let record = records[name] else { throw Self.unknown(name) }
            return record.rollout
        }
    }

    /// Stops every loaded version's instance threads (server shutdown).
    public func stopAll() {
        let models = self.state.withLock { records in records.values.flatMap { $0.models.values } }
        for model in models { model.scheduler.shutdown() }
    }

    // MARK: Internals

    /// Applies `event` to one model, then performs its effects and waits until the
    /// change is persisted.
    ///
    /// Routing is published and the persisted form handed to the store's queue under the
    /// lock, so concurrent changes publish and save in the order they were made; the save
    /// itself, logging, timers and unloads happen after it.
    /// - Parameter update: changes the record's loaded versions alongside the event, under the
    ///   same lock; runs only if the event applies.
    @discardableResult
    func change<T>(
        _ name: String, _ event: RolloutEvent, by actor: RolloutActor, _ update: (inout ModelRecord) -> T
    ) async throws(InferWireError) -> (rollout: RolloutState, result: T) {
        let now = Date()
        let (rollout, result, effects, saving) = try self.state.withLock {
            records throws(InferWireError) -> (RolloutState, T, [RolloutEffect], Int?) in
            guard var record = records[name] else { throw Self.unknown(name) }
            let effects = try record.rollout.apply(event, by: actor, at: now)
            let result = update(&record)
            record.followShadow()
            records[name] = record
            if effects.contains(.publishRouting) { self.publish(records) }
            let saving = effects.contains(.persist) ? self.saves.submit(Self.persisted(records)) : nil
            return (record.rollout, result, effects, saving)
        }
        if let counted = Self.countedName(event) {
            self.count(Self.rolloutEventsMetric, [("model", name), ("event", counted)])
        }
        await self.perform(effects, model: name, by: actor)
        if let saving { await self.saves.flush(through: saving) }
        return (rollout, result)
    }

    func change(_ name: String, _ event: RolloutEvent, by actor: RolloutActor) async throws(InferWireError) -> (
        rollout: RolloutState, result: Void
    ) {
        try await self.change(name, event, by: actor) { _ in () }
    }

    /// Performs the effects that happen outside the lock (publishing and persisting
    /// happened under it).
    func perform(_ effects: [RolloutEffect], model name: String, by actor: RolloutActor) async {
        for effect in effects {
            switch effect {
            case .publishRouting, .persist:
                break
            case .log(let entry):
                var metadata: Logger.Metadata = ["model": "\(name)", "actor": "\(entry.actor)"]
                if !entry.principal.isEmpty { metadata["principal"] = "\(entry.principal)" }
                self.logger.info("\(entry.action): \(entry.detail)", metadata: metadata)
            case .scheduleGraceUnload(let version, let delay, let promotion):
                guard self.work.isRunning else {
                    self.logger.debug(
                        "no grace-period unload: the manager's work is not running",
                        metadata: ["model": "\(name)", "version": "\(version)"])
                    continue
                }
                self.work.schedule(after: delay) {
                    _ = try? await self.change(
                        name, .graceExpired(version: version, promotion: promotion), by: .graceTimer)
                }
            case .ensureLoaded(let version):
                // Off the caller's path once running (a watch delivering changes must not wait
                // for a load); at start-up, before serving, in line.
                if self.work.isRunning {
                    self.work.submit({ await self.loadNamedVersion(name, version: version) }, refuse: {})
                } else {
                    await self.loadNamedVersion(name, version: version)
                }
            case .unload(let version):
                do {
                    _ = try await self.unload(name, version: version, actor: actor)
                } catch {
                    self.logger.warning(
                        "cannot unload", metadata: ["model": "\(name)", "version": "\(version)", "error": "\(error)"])
                }
            }
        }
    }

    /// Runs blocking work (a model load, a queue drain) on a thread of its own, so it holds
    /// up neither an event loop nor the concurrency pool. The caller awaits it, so it ends
    /// before whatever owns the caller does.
    private static func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: work()) }
        }
    }

    /// Builds the routing snapshot from the records and swaps it in (called under the lock).
    func publish(_ records: [String: ModelRecord]) {
        var snapshot = ModelRegistry.Snapshot()
        for (name, record) in records {
            let rollout = record.rollout
            var entry = ModelRegistry.ModelEntry()
            for (version, phase) in rollout.phases {
                if phase == .ready, let model = record.models[version] { entry.versions[version] = model }
                if case .failed(let reason) = phase { entry.failedVersions[version] = reason }
            }
            entry.failure = rollout.failure
            entry.stable = rollout.stable
            entry.canary = rollout.canary
            entry.canaryPercent = rollout.canaryPercent
            entry.sticky = rollout.sticky
            if let tally = record.shadowTally, rollout.shadow == tally.version, rollout.phases[tally.version] == .ready
            {
                entry.shadow = tally
                entry.shadowPercent = rollout.shadowPercent
            }
            snapshot.models[name] = entry
        }
        self.registry.update { $0 = snapshot }
    }

    private static func persisted(_ records: [String: ModelRecord]) -> PersistedRollouts {
        PersistedRollouts(models: records.mapValues(\.rollout.persisted))
    }

    static func unknown(_ name: String) -> InferWireError {
        InferWireError(code: .notFound, message: "model '\(name)' is not in the repository")
    }

    static func status(_ version: Int64, _ phase: VersionPhase, _ model: LoadedModel?) -> Inferwire_V1_VersionStatus {
        var status = Inferwire_V1_VersionStatus()
        status.version = version
        status.state = phase.wire
        status.reason = phase.reason
        if let model {
            let stats = model.scheduler.statistics.withLock { $0 }
            status.requestCount = stats.requests
            status.failureCount = stats.failures
            status.meanComputeUs = stats.requests > 0 ? stats.computeMicros / stats.requests : 0
        }
        return status
    }

    static func modelStatus(_ record: ModelRecord) -> Inferwire_V1_ModelStatus {
        var status = Inferwire_V1_ModelStatus()
        status.name = record.rollout.model
        status.versions = record.rollout.phases.keys.sorted().map {
            Self.status($0, record.rollout.phases[$0]!, record.models[$0])
        }
        status.rollout = record.rollout.wire
        if let tally = record.shadowTally, record.rollout.shadow == tally.version { status.shadow = tally.report }
        return status
    }
}

extension ModelManager {
    /// Runs the manager's owned work for the duration of `body`, then cancels it and waits
    /// for it, as a service group's shutdown would: for tests and tools without a
    /// `ServiceGroup`.
    package func whileRunning<T>(_ body: () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.run(pollInterval: nil, guardInterval: nil) }
            while !self.isRunning { await Task.yield() }
            defer { group.cancelAll() }
            return try await body()
        }
    }
}

extension Inferwire_V1_ModelStatus {
    fileprivate func withReplicas(_ replicas: [Inferwire_V1_ReplicaVersions]) -> Self {
        var status = self
        status.replicas = replicas
        return status
    }
}
