import Foundation
import InferWireCore
import InferWireProto
import Logging
import Synchronization

// Replicas sharing one rollout state: a change is proposed against the shared value this
// replica last saw and written by compare-and-swap; only a written change is applied, the
// same way on every replica (this one included), when the store's watch delivers it.

extension ModelManager.ModelRecord {
    /// Keeps the shadow tally in step with the rollout's shadow version.
    mutating func followShadow() {
        if self.rollout.shadow != self.shadowTally?.version {
            self.shadowTally = self.rollout.shadow.map { ShadowTally(version: $0) }
        }
    }
}

extension ModelManager {
    /// Applies a rollout change that replicas share. Alone, as ``change(_:_:by:)``; in a
    /// fleet, read the shared value, apply the event to it, and write the result only if no
    /// other change landed in between; then apply it here (the others apply it from the watch).
    /// - Throws: ABORTED naming the current state when another change came first;
    ///   UNAVAILABLE when the store cannot be reached.
    @discardableResult
    func changeShared(_ name: String, _ event: RolloutEvent, by actor: RolloutActor) async throws(InferWireError)
        -> RolloutState
    {
        guard let fleet = self.configuration.fleet else { return try await self.change(name, event, by: actor).rollout }
        if let problem = self.sharedStateProblem { throw InferWireError(code: .unavailable, message: problem) }
        // Caught up first: a change made through another replica a moment ago is the base,
        // not a conflict. Only a change landing between this read and the write conflicts.
        do {
            if let current = try await fleet.store.read(model: name) { await self.adopt(name, current) }
        } catch {
            self.markUnreachable(error)
            throw InferWireError(
                code: .unavailable,
                message:
                    "the rollout state store (\(fleet.store.location)) cannot be read: \(error); nothing was changed")
        }
        let now = Date()
        let (proposal, base, unchanged) = try self.state.withLock {
            records throws(InferWireError) -> (RolloutState, Int64, Bool) in
            guard let record = records[name] else { throw Self.unknown(name) }
            var proposal = record.rollout
            _ = try proposal.apply(event, by: actor, at: now)
            return (proposal, record.sharedRevision, proposal.persisted == record.rollout.persisted)
        }
        if unchanged { return proposal }
        let outcome: SharedRolloutWrite
        do {
            outcome = try await fleet.store.write(model: name, rollout: proposal.persisted, expectedRevision: base)
        } catch {
            self.markUnreachable(error)
            throw InferWireError(
                code: .unavailable,
                message: "the rollout state store (\(fleet.store.location)) did not take the change: \(error); "
                    + "nothing was changed")
        }
        switch outcome {
        case .written(let revision):
            if let counted = Self.countedName(event) {
                self.count(Self.rolloutEventsMetric, [("model", name), ("event", counted)])
            }
            return await self.adopt(name, SharedRollout(rollout: proposal.persisted, revision: revision)) ?? proposal
        case .conflict(let current):
            if let current { await self.adopt(name, current) }
            let now = (try? self.rollout(name)).map(Self.describeRouting) ?? "unknown"
            let last = current?.rollout.history.last.map { " (last change: \($0.action), \($0.detail))" } ?? ""
            throw InferWireError(
                code: .aborted,
                message:
                    "model '\(name)' was changed through another replica first; nothing was changed. It is now \(now)\(last); check and retry"
            )
        }
    }

    /// Applies a shared value newer than the one this replica follows: routing, history, and
    /// what follows from them (old stable's grace-period unload, loading named versions).
    /// - Returns: the rollout after, or nil when the value was not newer.
    @discardableResult
    func adopt(_ name: String, _ shared: SharedRollout) async -> RolloutState? {
        let now = Date()
        let outcome = self.state.withLock { records -> (RolloutState, [RolloutEffect])? in
            guard var record = records[name], shared.revision > record.sharedRevision,
                let effects = try? record.rollout.apply(.adopt(shared.rollout), by: .fleet, at: now)
            else { return nil }
            record.sharedRevision = shared.revision
            record.followShadow()
            records[name] = record
            self.publish(records)
            return (record.rollout, effects)
        }
        guard let (rollout, effects) = outcome else { return nil }
        await self.perform(effects, model: name, by: .fleet)
        return rollout
    }

    /// Brings this replica in line with the shared state read whole: adopts what is newer,
    /// and writes this replica's rollout for models the store does not have yet.
    /// - Returns: false when the store could not be reached for a write.
    @discardableResult
    func reconcile(_ shared: [String: SharedRollout]) async -> Bool {
        guard let fleet = self.configuration.fleet else { return true }
        let local = self.state.withLock { records in records.mapValues { ($0.rollout.persisted, $0.sharedRevision) } }
        for (name, (rollout, revision)) in local.sorted(by: { $0.key < $1.key }) {
            if let current = shared[name] {
                await self.adopt(name, current)
                continue
            }
            guard revision == 0 else { continue }
            do {
                switch try await fleet.store.write(model: name, rollout: rollout, expectedRevision: 0) {
                case .written(let revision):
                    await self.adopt(name, SharedRollout(rollout: rollout, revision: revision))
                case .conflict(let current?):
                    await self.adopt(name, current)
                case .conflict(nil):
                    break
                }
            } catch {
                self.markUnreachable(error)
                return false
            }
        }
        return true
    }

    /// Follows the shared state until cancelled: applies every change the store's watch
    /// delivers; when the watch breaks (the store restarted, stopped, or compacted what
    /// this replica missed) marks the store unreachable, then reads it whole again and
    /// resumes watching from there.
    func followSharedState(_ fleet: Fleet) async {
        var mustReload = true
        while !Task.isCancelled {
            var revision: Int64 = 0
            if mustReload {
                do {
                    let (rollouts, at) = try await fleet.store.load()
                    revision = at
                    guard await self.reconcile(rollouts) else { throw ReconcileFailed() }
                    self.markReachable()
                    mustReload = false
                } catch {
                    if Task.isCancelled { return }
                    self.markUnreachable(error)
                    do { try await self.configuration.clock.sleep(for: fleet.retryInterval) } catch { return }
                    continue
                }
            }
            do {
                try await fleet.store.watch(from: revision + 1) { changes in
                    for (name, shared) in changes.sorted(by: { $0.key < $1.key }) { await self.adopt(name, shared) }
                }
                return
            } catch {
                if Task.isCancelled { return }
                self.markUnreachable(error)
                mustReload = true
                do { try await self.configuration.clock.sleep(for: fleet.retryInterval) } catch { return }
            }
        }
    }

    /// Publishes this replica's report, claims or keeps the guard's lead, and reads every
    /// replica's report (for fleet-wide status and the guard).
    func report(_ fleet: Fleet) async {
        guard !self.fleetStatus.withLock(\.left) else { return }
        let report = self.makeReport(replica: fleet.replica)
        do {
            try await fleet.store.publish(report)
            let leads = try await fleet.store.leadGuard(as: fleet.replica)
            let reports = try await fleet.store.reports()
            self.markReachable()
            let changed = self.fleetStatus.withLock { status in
                defer {
                    status.leadsGuard = leads
                    status.reports = reports
                }
                return status.leadsGuard != leads
            }
            if changed {
                self.logger.info(
                    leads ? "this replica leads the canary guard" : "this replica no longer leads the canary guard",
                    metadata: ["replica": "\(fleet.replica)"])
            }
        } catch {
            self.fleetStatus.withLock { $0.leadsGuard = false }
            self.markUnreachable(error)
        }
    }

    /// This replica's versions, and the guard windows of every guarded canary and its stable.
    func makeReport(replica: String, at now: ContinuousClock.Instant = .now) -> ReplicaReport {
        let epoch = SlidingWindow.epoch(now)
        let models = self.state.withLock { records in
            records.mapValues { record -> ReplicaReport.Model in
                let rollout = record.rollout
                let versions = rollout.phases.keys.sorted().map { version in
                    let phase = rollout.phases[version]!
                    return ReplicaReport.Version(
                        version: version, state: Self.stateName(phase.wire), reason: phase.reason)
                }
                var windows: [ReplicaReport.Window] = []
                if rollout.settings.hasGuard, let canary = rollout.canary, let stable = rollout.stable {
                    let span = CanaryGuard(settings: rollout.settings.guard).windowSeconds
                    for version in [stable, canary] {
                        guard let model = record.models[version] else { continue }
                        let totals = model.scheduler.statistics.withLock { $0.window.totals(epoch: epoch, span: span) }
                        windows.append(
                            .init(
                                version: version, span: span, requests: totals.requests, failures: totals.failures,
                                latency: totals.latency))
                    }
                }
                return ReplicaReport.Model(versions: versions, windows: windows)
            }
        }
        return ReplicaReport(
            replica: replica, unixMillis: Int64(Date().timeIntervalSince1970 * 1000), models: models)
    }

    /// The guard across the fleet: run by the replica that leads it, on every replica's
    /// counts added up.
    func checkGuardsAcrossFleet() async -> [String] {
        let (leads, reports) = self.fleetStatus.withLock { ($0.leadsGuard, $0.reports) }
        guard leads else { return [] }
        let candidates = self.state.withLock { records in
            records.compactMap { name, record -> (String, CanaryGuard, Int64, Int64)? in
                let rollout = record.rollout
                guard rollout.settings.hasGuard, let canary = rollout.canary, let stable = rollout.stable else {
                    return nil
                }
                return (name, CanaryGuard(settings: rollout.settings.guard), canary, stable)
            }
        }
        var rolledBack: [String] = []
        for (name, canaryGuard, canary, stable) in candidates.sorted(by: { $0.0 < $1.0 }) {
            let windows = reports.flatMap { $0.models[name]?.windows ?? [] }
            let c = ReplicaReport.Window.total(windows.filter { $0.version == canary })
            let s = ReplicaReport.Window.total(windows.filter { $0.version == stable })
            guard let reason = canaryGuard.verdict(canary: c, stable: s) else { continue }
            if (try? await self.changeShared(name, .guardRollback(reason: reason + " across the fleet"), by: .guard))
                != nil
            {
                rolledBack.append(name)
            }
        }
        return rolledBack
    }

    /// Loads a version the shared rollout names; one missing from this replica's repository
    /// is marked FAILED here, saying so.
    func loadNamedVersion(_ name: String, version: Int64) async {
        do {
            _ = try await self.load(name, version: version, actor: .fleet)
        } catch {
            let reason =
                error.code == .notFound
                ? "named by the shared rollout but not in this replica's repository" : error.message
            _ = try? await self.change(name, .versionFailed(version, reason: reason), by: .fleet)
            self.logger.error(
                "cannot load a version the shared rollout names",
                metadata: ["model": "\(name)", "version": "\(version)", "reason": "\(reason)"])
        }
    }

    /// Every replica's versions of `name` as last reported, for ``status(_:)``.
    func replicaVersions(_ name: String) -> [Inferwire_V1_ReplicaVersions] {
        let reports = self.fleetStatus.withLock { $0.reports }
        return reports.sorted { $0.replica < $1.replica }.compactMap { report in
            guard let model = report.models[name] else { return nil }
            var replica = Inferwire_V1_ReplicaVersions()
            replica.replica = report.replica
            replica.reportedUnixMillis = report.unixMillis
            replica.versions = model.versions.map { version in
                var status = Inferwire_V1_VersionStatus()
                status.version = version.version
                status.state = Inferwire_V1_VersionState(name: version.state)
                status.reason = version.reason
                return status
            }
            return replica
        }
    }

    /// The store answered: changes are accepted again.
    func markReachable() {
        guard let fleet = self.configuration.fleet else { return }
        let recovered = self.fleetStatus.withLock { status in
            defer { status.problem = nil }
            return status.problem != nil
        }
        if recovered {
            self.logger.notice("the rollout state store answers again", metadata: ["store": "\(fleet.store.location)"])
        }
    }

    func markUnreachable(_ error: any Error) {
        guard let fleet = self.configuration.fleet else { return }
        let first = self.fleetStatus.withLock { status in
            guard status.problem == nil else { return false }
            status.problem = ("\(error)", Date())
            return true
        }
        if first {
            self.logger.error(
                "the rollout state store cannot be reached: serving with the last state seen, refusing rollout changes",
                metadata: ["store": "\(fleet.store.location)", "error": "\(error)"])
        }
    }

    static func describeRouting(_ rollout: RolloutState) -> String {
        var parts = ["stable \(rollout.stable.map(String.init) ?? "none")"]
        if let canary = rollout.canary { parts.append("canary \(canary) at \(rollout.canaryPercent)%") }
        if let shadow = rollout.shadow { parts.append("shadow \(shadow) at \(rollout.shadowPercent)%") }
        return parts.joined(separator: ", ")
    }

    static func stateName(_ state: Inferwire_V1_VersionState) -> String {
        switch state {
        case .loading: "LOADING"
        case .ready: "READY"
        case .failed: "FAILED"
        case .draining: "DRAINING"
        case .unloaded: "UNLOADED"
        default: "UNSPECIFIED"
        }
    }
}

/// A write during reconciliation failed (and marked the store unreachable).
private struct ReconcileFailed: Error {}

extension Inferwire_V1_VersionState {
    /// The state a report names (``ModelManager/stateName(_:)``); unknown names are `.unspecified`.
    init(name: String) {
        switch name {
        case "LOADING": self = .loading
        case "READY": self = .ready
        case "FAILED": self = .failed
        case "DRAINING": self = .draining
        case "UNLOADED": self = .unloaded
        default: self = .unspecified
        }
    }
}
