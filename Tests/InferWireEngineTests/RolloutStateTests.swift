import Foundation
import InferWireCore
import InferWireEngine
import InferWireProto
import Testing

/// A fixed wall-clock time for history entries.
private let t0 = Date(timeIntervalSince1970: 1_700_000_000)

/// Model `m` with versions 1–3 ready and version 3 stable (as start-up leaves it).
private func started(settings: Inferwire_V1_RolloutSettings = .init(), historyLimit: Int = 200) throws -> RolloutState {
    var state = RolloutState(
        model: "m", phases: [1: .ready, 2: .ready, 3: .ready], settings: settings, historyLimit: historyLimit)
    _ = try state.apply(.restore(nil), by: .startup, at: t0)
    return state
}

/// The error `body` throws, or nil.
private func failure(_ body: () throws(InferWireError) -> Void) -> InferWireError? {
    do throws(InferWireError) {
        try body()
        return nil
    } catch {
        return error
    }
}

@Suite("Rollout state")
struct RolloutStateTests {
    // MARK: Start-up

    @Test("restoring with nothing saved makes the highest ready version stable and records it as startup")
    func restoreDefaults() throws {
        var state = RolloutState(model: "m", phases: [1: .ready, 2: .ready, 5: .failed(reason: "bad")])
        let effects = try state.apply(.restore(nil), by: .startup, at: t0)
        #expect(state.stable == 2)
        #expect(state.canary == nil)
        let entry = try #require(state.history.last)
        #expect(entry.action == "restore")
        #expect(entry.actor == "startup")
        #expect(entry.detail == "stable 2")
        #expect(entry.unixMillis == 1_700_000_000_000)
        #expect(effects == [.publishRouting, .log(entry), .persist])
    }

    @Test("restoring applies saved versions that are ready and ignores the rest, keeping the saved history")
    func restoreSaved() throws {
        let old = RolloutHistoryEntry(
            unixMillis: 1, action: "promote", detail: "version 1 stable (was 2)", actor: "api", model: "m")
        var state = RolloutState(model: "m", phases: [1: .ready, 2: .ready, 3: .failed(reason: "bad")])
        _ = try state.apply(
            .restore(
                PersistedRollout(
                    stable: 1, canary: 2, canaryPercent: 250, sticky: true, previousStable: 3, history: [old])),
            by: .startup, at: t0)
        #expect(state.stable == 1)
        #expect(state.canary == 2)
        #expect(state.canaryPercent == 100)  // clamped
        #expect(state.sticky)
        #expect(state.previousStable == nil)  // version 3 is not ready
        #expect(state.history.map(\.action) == ["promote", "restore"])
        #expect(state.history.last?.detail == "stable 1, canary 2 at 100%")

        var gone = RolloutState(model: "m", phases: [1: .ready])
        _ = try gone.apply(.restore(PersistedRollout(stable: 9, canary: 1, canaryPercent: 10)), by: .startup, at: t0)
        #expect(gone.stable == 1)
        #expect(gone.canary == nil)  // the canary cannot be the stable version
    }

    @Test("the persisted form carries stable, canary, share, previous stable and history")
    func persistedForm() throws {
        var state = try started()
        _ = try state.apply(.setTraffic(canary: 2, percent: 25, sticky: true), by: .api, at: t0)
        #expect(
            state.persisted
                == PersistedRollout(
                    stable: 3, canary: 2, canaryPercent: 25, sticky: true, previousStable: nil, newest: 3,
                    history: state.history))
        #expect(state.wire.canaryPercent == 25)
        #expect(state.wire.stableVersion == 3)
    }

    // MARK: Version life cycle

    @Test("a version moves through loading and ready; the first ready version of a model becomes stable")
    func loadingAndReady() throws {
        var state = RolloutState(model: "m")
        #expect(try state.apply(.versionLoading(4), by: .api, at: t0) == [])
        #expect(state.phases[4] == .loading)
        #expect(state.history.isEmpty)
        let effects = try state.apply(.versionReady(4), by: .api, at: t0)
        #expect(state.phases[4] == .ready)
        #expect(state.stable == 4)
        let entry = try #require(state.history.last)
        #expect((entry.action, entry.detail, entry.actor) == ("load", "version 4 ready", "api"))
        #expect(effects == [.publishRouting, .log(entry), .persist])

        _ = try state.apply(.versionReady(5), by: .poller, at: t0)
        #expect(state.stable == 4)  // a later version does not take over by loading
        #expect(state.history.last?.actor == "poller")
    }

    @Test("a failed load records the reason as failed-load and changes no routing role")
    func failedLoad() throws {
        var state = try started()
        _ = try state.apply(.versionLoading(4), by: .poller, at: t0)
        let effects = try state.apply(.versionFailed(4, reason: "truncated file"), by: .poller, at: t0)
        #expect(state.phases[4] == .failed(reason: "truncated file"))
        #expect(state.phases[4]?.reason == "truncated file")
        #expect(state.phases[4]?.wire == .failed)
        #expect(state.stable == 3)
        let entry = try #require(state.history.last)
        #expect((entry.action, entry.detail, entry.actor) == ("failed-load", "version 4: truncated file", "poller"))
        #expect(effects.contains(.persist))
    }

    @Test("draining takes a version out of routing and forgets it as previous stable; unloaded ends it")
    func drainAndUnload() throws {
        var state = try started()
        _ = try state.apply(.setTraffic(canary: 2, percent: 10, sticky: false), by: .api, at: t0)
        _ = try state.apply(.promote, by: .api, at: t0)
        #expect(state.previousStable == 3)
        let effects = try state.apply(.versionDraining(3), by: .graceTimer, at: t0)
        #expect(state.phases[3] == .draining)
        #expect(state.previousStable == nil)
        let entry = try #require(state.history.last)
        #expect((entry.action, entry.detail, entry.actor) == ("unload", "version 3 draining", "grace-period"))
        #expect(effects == [.publishRouting, .log(entry)])
        #expect(try state.apply(.versionUnloaded(3), by: .graceTimer, at: t0) == [.publishRouting, .persist])
        #expect(state.phases[3] == .unloaded)
    }

    @Test("stable, canary and shadow versions, and versions not loaded, cannot be unloaded")
    func unloadRefused() throws {
        var state = try started()
        _ = try state.apply(.setTraffic(canary: 2, percent: 10, sticky: false), by: .api, at: t0)
        _ = try state.apply(.setShadow(version: 1, percent: 10), by: .api, at: t0)
        let before = state
        for (version, role) in [(3, "stable"), (2, "the canary"), (1, "the shadow")] as [(Int64, String)] {
            let error = try #require(
                failure { () throws(InferWireError) in _ = try state.apply(.versionDraining(version), by: .api, at: t0)
                })
            #expect(error.code == .failedPrecondition)
            #expect(error.message.contains("is \(role)"))
        }
        let missing = try #require(
            failure { () throws(InferWireError) in _ = try state.apply(.versionDraining(9), by: .api, at: t0) })
        #expect(missing.message.contains("version 9 is not loaded"))
        #expect(state == before)
    }

    // MARK: Traffic and shadow

    @Test("traffic sends a share to a ready canary, sticky or not; canary 0 clears it")
    func traffic() throws {
        var state = try started()
        var effects = try state.apply(.setTraffic(canary: 2, percent: 25, sticky: true), by: .api, at: t0)
        #expect((state.canary, state.canaryPercent, state.sticky) == (2, 25, true))
        let entry = try #require(state.history.last)
        #expect((entry.action, entry.detail) == ("traffic", "canary version 2 at 25%, sticky"))
        #expect(effects == [.publishRouting, .log(entry), .persist])
        effects = try state.apply(.setTraffic(canary: 0, percent: 0, sticky: false), by: .api, at: t0)
        #expect(state.canary == nil)
        #expect(state.canaryPercent == 0)
        #expect(state.history.last?.detail == "canary cleared")
    }

    @Test("traffic refuses an unknown version, the stable version, a version not ready and a share outside 0–100")
    func trafficRefused() throws {
        var state = try started()
        _ = try state.apply(.versionLoading(4), by: .api, at: t0)
        let before = state
        let cases: [(RolloutEvent, InferWireError.Code, String)] = [
            (
                .setTraffic(canary: 9, percent: 10, sticky: false), .failedPrecondition,
                "version 9 is not loaded and ready"
            ),
            (
                .setTraffic(canary: 4, percent: 10, sticky: false), .failedPrecondition,
                "version 4 is not loaded and ready"
            ),
            (.setTraffic(canary: 3, percent: 10, sticky: false), .failedPrecondition, "version 3 is already stable"),
            (
                .setTraffic(canary: 2, percent: 101, sticky: false), .invalidArgument,
                "percent must be 0 to 100, got 101"
            ),
            (.setTraffic(canary: 2, percent: -1, sticky: false), .invalidArgument, "got -1"),
            (.setShadow(version: 9, percent: 10), .failedPrecondition, "version 9 is not loaded and ready"),
            (.setShadow(version: 3, percent: 10), .failedPrecondition, "already stable"),
            (.setShadow(version: 2, percent: 200), .invalidArgument, "got 200"),
        ]
        for (event, code, message) in cases {
            let error = try #require(
                failure { () throws(InferWireError) in _ = try state.apply(event, by: .api, at: t0) })
            #expect(error.code == code, "\(event)")
            #expect(error.message.contains(message), "\(event): \(error.message)")
        }
        #expect(state == before)  // a refused event changes nothing
    }

    @Test("shadow mirrors a share to a ready version; version 0 stops it")
    func shadow() throws {
        var state = try started()
        _ = try state.apply(.setShadow(version: 1, percent: 20), by: .api, at: t0)
        #expect((state.shadow, state.shadowPercent) == (1, 20))
        #expect(
            state.history.last.map { ($0.action, $0.detail) } ?? ("", "") == (
                "shadow", "version 1 shadows 20% of stable's traffic"
            ))
        #expect(state.wire.shadowVersion == 1)
        _ = try state.apply(.setShadow(version: 0, percent: 0), by: .api, at: t0)
        #expect(state.shadow == nil)
        #expect(state.history.last?.detail == "shadowing stopped")
    }

    // MARK: Promote and rollback

    @Test("promote makes the canary stable, keeps the old stable as previous and schedules its grace unload")
    func promote() throws {
        var settings = Inferwire_V1_RolloutSettings()
        settings.rollbackGraceSeconds = 30
        var state = try started(settings: settings)
        _ = try state.apply(.setTraffic(canary: 2, percent: 10, sticky: false), by: .api, at: t0)
        let effects = try state.apply(.promote, by: .api, at: t0)
        #expect(state.stable == 2)
        #expect(state.previousStable == 3)
        #expect(state.canary == nil)
        #expect(state.canaryPercent == 0)
        #expect(state.promotions == 1)
        let entry = try #require(state.history.last)
        #expect((entry.action, entry.detail) == ("promote", "version 2 stable (was 3)"))
        #expect(
            effects == [
                .publishRouting, .log(entry), .persist,
                .scheduleGraceUnload(version: 3, delay: .seconds(30), promotion: 1),
            ])
    }

    @Test("the grace period is 600 s unless the settings say otherwise")
    func defaultGrace() throws {
        var state = try started()
        _ = try state.apply(.setTraffic(canary: 1, percent: 10, sticky: false), by: .api, at: t0)
        let effects = try state.apply(.promote, by: .api, at: t0)
        #expect(effects.last == .scheduleGraceUnload(version: 3, delay: .seconds(600), promotion: 1))
    }

    @Test("promote without a canary is refused")
    func promoteWithoutCanary() throws {
        var state = try started()
        let error = try #require(
            failure { () throws(InferWireError) in _ = try state.apply(.promote, by: .api, at: t0) })
        #expect(error.code == .failedPrecondition)
        #expect(error.message == "model 'm' has no canary to promote")
        #expect(state.promotions == 0)
    }

    @Test("rollback withdraws the canary first, then restores the previous stable version, saying why")
    func rollback() throws {
        var state = try started()
        _ = try state.apply(.setTraffic(canary: 2, percent: 10, sticky: false), by: .api, at: t0)
        _ = try state.apply(.promote, by: .api, at: t0)
        _ = try state.apply(.setTraffic(canary: 1, percent: 5, sticky: false), by: .api, at: t0)

        _ = try state.apply(.rollback(reason: ""), by: .api, at: t0)
        #expect(state.canary == nil)
        #expect(state.stable == 2)
        #expect(
            state.history.last.map { ($0.action, $0.detail) } ?? ("", "") == ("rollback", "canary version 1 withdrawn"))

        let effects = try state.apply(.rollback(reason: "bad answers"), by: .api, at: t0)
        #expect(state.stable == 3)
        #expect(state.previousStable == 2)
        let entry = try #require(state.history.last)
        #expect(
            (entry.action, entry.detail, entry.actor) == (
                "rollback", "version 3 stable again (was 2): bad answers", "api"
            ))
        #expect(effects == [.publishRouting, .log(entry), .persist])
    }

    @Test("rollback with no canary and no previous stable version is refused")
    func rollbackWithNothing() throws {
        var state = try started()
        let error = try #require(
            failure { () throws(InferWireError) in _ = try state.apply(.rollback(reason: ""), by: .api, at: t0) })
        #expect(error.code == .failedPrecondition)
        #expect(error.message.contains("no canary and no previous stable version"))

        // A previous stable version that is no longer ready does not count.
        _ = try state.apply(.setTraffic(canary: 2, percent: 10, sticky: false), by: .api, at: t0)
        _ = try state.apply(.promote, by: .api, at: t0)
        _ = try state.apply(.versionDraining(3), by: .graceTimer, at: t0)
        #expect(
            failure { () throws(InferWireError) in _ = try state.apply(.rollback(reason: ""), by: .api, at: t0) } != nil
        )
    }

    @Test("a guard rollback withdraws the canary and records auto-rollback by the guard with the reason")
    func guardRollback() throws {
        var state = try started()
        _ = try state.apply(.setTraffic(canary: 2, percent: 50, sticky: false), by: .api, at: t0)
        let effects = try state.apply(
            .guardRollback(reason: "canary error rate 50.0% vs stable 0.0%"), by: .guard, at: t0)
        #expect(state.canary == nil)
        #expect(state.stable == 3)
        let entry = try #require(state.history.last)
        #expect(entry.action == "auto-rollback")
        #expect(entry.actor == "guard")
        #expect(entry.detail == "canary version 2 withdrawn: canary error rate 50.0% vs stable 0.0%")
        #expect(effects == [.publishRouting, .log(entry), .persist])

        // With no canary left there is nothing for the guard to undo; stable stays.
        let error = try #require(
            failure { () throws(InferWireError) in _ = try state.apply(.guardRollback(reason: "x"), by: .guard, at: t0)
            })
        #expect(error.code == .failedPrecondition)
        #expect(state.stable == 3)
    }

    // MARK: Grace period

    @Test("grace expiry unloads the old stable version it was scheduled for")
    func graceExpiry() throws {
        var state = try started()
        _ = try state.apply(.setTraffic(canary: 2, percent: 10, sticky: false), by: .api, at: t0)
        _ = try state.apply(.promote, by: .api, at: t0)
        let before = state
        #expect(
            try state.apply(.graceExpired(version: 3, promotion: 1), by: .graceTimer, at: t0) == [.unload(version: 3)])
        #expect(state == before)  // the unload itself is a later event
    }

    @Test("grace expiry after a later promotion, or after a rollback brought the version back, is a no-op")
    func graceSuperseded() throws {
        var state = try started()
        _ = try state.apply(.setTraffic(canary: 2, percent: 10, sticky: false), by: .api, at: t0)
        _ = try state.apply(.promote, by: .api, at: t0)  // promotion 1: 3 → previous
        _ = try state.apply(.setTraffic(canary: 1, percent: 10, sticky: false), by: .api, at: t0)
        _ = try state.apply(.promote, by: .api, at: t0)  // promotion 2: 2 → previous
        #expect(try state.apply(.graceExpired(version: 3, promotion: 1), by: .graceTimer, at: t0) == [])
        #expect(try state.apply(.graceExpired(version: 2, promotion: 1), by: .graceTimer, at: t0) == [])
        #expect(
            try state.apply(.graceExpired(version: 2, promotion: 2), by: .graceTimer, at: t0) == [.unload(version: 2)])

        _ = try state.apply(.rollback(reason: ""), by: .api, at: t0)  // 2 stable again, 1 previous
        #expect(try state.apply(.graceExpired(version: 2, promotion: 2), by: .graceTimer, at: t0) == [])
    }

    // MARK: The poller

    @Test("a version the poller finds takes the role its settings give: canary, stable or none")
    func versionFound() throws {
        var settings = Inferwire_V1_RolloutSettings()
        var state = try started()
        _ = try state.apply(.versionReady(4), by: .poller, at: t0)
        _ = try state.apply(.versionFound(4, settings: settings), by: .poller, at: t0)
        #expect((state.canary, state.canaryPercent) == (4, 10))  // canary with 10% unless set
        #expect(
            state.history.last.map { ($0.action, $0.detail, $0.actor) } ?? ("", "", "") == (
                "traffic", "canary version 4 at 10%", "poller"
            ))

        settings.canaryPercent = 25
        _ = try state.apply(.versionReady(5), by: .poller, at: t0)
        _ = try state.apply(.versionFound(5, settings: settings), by: .poller, at: t0)
        #expect((state.canary, state.canaryPercent) == (5, 25))
        #expect(state.settings.canaryPercent == 25)

        settings.newVersionRole = .none
        _ = try state.apply(.versionReady(6), by: .poller, at: t0)
        _ = try state.apply(.versionFound(6, settings: settings), by: .poller, at: t0)
        #expect(state.canary == 5)
        #expect(state.history.last?.detail == "version 6 loaded; routed only by number")

        settings.newVersionRole = .stable
        settings.rollbackGraceSeconds = 1
        _ = try state.apply(.versionReady(7), by: .poller, at: t0)
        let effects = try state.apply(.versionFound(7, settings: settings), by: .poller, at: t0)
        #expect(state.stable == 7)
        #expect(state.previousStable == 3)
        #expect(state.history.last?.action == "promote")
        #expect(effects.last == .scheduleGraceUnload(version: 3, delay: .seconds(1), promotion: 1))
    }

    @Test("the first version of a new model is stable when found; a version not ready cannot be given a role")
    func versionFoundFirstOrNotReady() throws {
        var state = RolloutState(model: "m")
        _ = try state.apply(.versionReady(1), by: .poller, at: t0)
        _ = try state.apply(.versionFound(1, settings: .init()), by: .poller, at: t0)
        #expect(state.stable == 1)
        #expect(state.canary == nil)
        #expect(state.history.last?.detail == "version 1 is the first and stable")
        _ = try state.apply(.versionLoading(2), by: .poller, at: t0)
        #expect(
            failure { () throws(InferWireError) in
                _ = try state.apply(.versionFound(2, settings: .init()), by: .poller, at: t0)
            }?.code == .failedPrecondition)
    }

    // MARK: History and actors

    @Test("history keeps the newest entries up to its limit")
    func historyLimit() throws {
        var state = try started(historyLimit: 3)
        for percent in 1...5 {
            _ = try state.apply(.setTraffic(canary: 2, percent: percent, sticky: false), by: .api, at: t0)
        }
        #expect(state.history.count == 3)
        #expect(
            state.history.map(\.detail) == [
                "canary version 2 at 3%", "canary version 2 at 4%", "canary version 2 at 5%",
            ])
    }

    @Test("actors print the words history and logs have always used")
    func actorNames() {
        #expect(
            [RolloutActor.api, .guard, .poller, .startup, .graceTimer].map(\.name) == [
                "api", "guard", "poller", "startup", "grace-period",
            ])
    }
}

@Suite("Canary guard")
struct CanaryGuardTests {
    func makeGuard(errorRate: Double = 0, p99Ratio: Double = 0, window: UInt32 = 0, minimum: UInt32 = 0) -> CanaryGuard
    {
        var settings = Inferwire_V1_RolloutGuard()
        settings.maxErrorRateIncrease = errorRate
        settings.maxP99Ratio = p99Ratio
        settings.windowSeconds = window
        settings.minRequests = minimum
        return CanaryGuard(settings: settings)
    }

    @Test(
        "a canary whose error rate exceeds stable's by more than the limit is rolled back, with both rates in the reason"
    )
    func errorRate() throws {
        let canaryGuard = self.makeGuard(errorRate: 0.05, window: 30, minimum: 20)
        let reason = try #require(
            canaryGuard.verdict(
                canary: .init(requests: 100, failures: 10, p99Micros: 100),
                stable: .init(requests: 100, failures: 2, p99Micros: 100)))
        #expect(reason == "canary error rate 10.0% vs stable 2.0% over 30s (limit +5.0 points)")
        // 6 points above stable: over; 5 points: at the limit, kept.
        #expect(
            canaryGuard.verdict(
                canary: .init(requests: 100, failures: 7, p99Micros: 0),
                stable: .init(requests: 100, failures: 1, p99Micros: 0)) != nil)
        #expect(
            canaryGuard.verdict(
                canary: .init(requests: 100, failures: 5, p99Micros: 0),
                stable: .init(requests: 100, failures: 1, p99Micros: 0)) == nil)
    }

    @Test("no verdict before the canary has served the minimum number of requests (50 unless set)")
    func minimumRequests() {
        let allFailed = CanaryGuard.WindowSummary(requests: 49, failures: 49, p99Micros: 0)
        let healthy = CanaryGuard.WindowSummary(requests: 1000, failures: 0, p99Micros: 0)
        #expect(self.makeGuard(errorRate: 0.01).verdict(canary: allFailed, stable: healthy) == nil)
        #expect(self.makeGuard(errorRate: 0.01).minimumRequests == 50)
        #expect(self.makeGuard(errorRate: 0.01).windowSeconds == 30)
        #expect(self.makeGuard(errorRate: 0.01, minimum: 10).verdict(canary: allFailed, stable: healthy) != nil)
    }

    @Test(
        "a canary whose p99 exceeds the ratio times stable's is rolled back; a stable version with no latency yet judges nothing"
    )
    func p99() throws {
        let canaryGuard = self.makeGuard(p99Ratio: 4, window: 10, minimum: 20)
        let reason = try #require(
            canaryGuard.verdict(
                canary: .init(requests: 60, failures: 0, p99Micros: 4096),
                stable: .init(requests: 60, failures: 0, p99Micros: 512)))
        #expect(reason == "canary p99 ≤4096 µs vs stable ≤512 µs over 10s (limit 4.0×)")
        #expect(
            canaryGuard.verdict(
                canary: .init(requests: 60, failures: 0, p99Micros: 2048),
                stable: .init(requests: 60, failures: 0, p99Micros: 512)) == nil)
        #expect(
            canaryGuard.verdict(
                canary: .init(requests: 60, failures: 0, p99Micros: 4096),
                stable: .init(requests: 0, failures: 0, p99Micros: 0)) == nil)
    }

    @Test("thresholds left at 0 are not checked")
    func unchecked() {
        let canaryGuard = self.makeGuard(minimum: 1)
        #expect(
            canaryGuard.verdict(
                canary: .init(requests: 100, failures: 100, p99Micros: 1 << 20),
                stable: .init(requests: 100, failures: 0, p99Micros: 1)) == nil)
    }
}

@Suite("Rollout state shared by replicas")
struct SharedRolloutStateTests {
    @Test("adopting another replica's promotion routes by it, logs its entries and schedules the grace unload")
    func adoptPromotion() throws {
        var other = try started()
        _ = try other.apply(.setTraffic(canary: 2, percent: 10, sticky: false), by: .api, at: t0)
        _ = try other.apply(.promote, by: .api, at: t0)
        var here = try started()
        let effects = try here.apply(.adopt(other.persisted), by: .fleet, at: t0)
        #expect(here.stable == 2)
        #expect(here.previousStable == 3)
        #expect(here.canary == nil)
        #expect(here.history == other.history)
        #expect(effects.contains(.publishRouting))
        #expect(
            effects.filter { if case .log = $0 { true } else { false } }.map { effect -> String in
                if case .log(let entry) = effect { return entry.action }
                return ""
            } == ["traffic", "promote"])
        #expect(effects.contains(.scheduleGraceUnload(version: 3, delay: here.rollbackGrace, promotion: 1)))
        // Adopting the same value again changes nothing that needs doing.
        #expect(try here.apply(.adopt(other.persisted), by: .fleet, at: t0) == [.publishRouting])
    }

    @Test("a shared value naming a version this replica never loaded asks for it to be loaded")
    func adoptUnknownVersion() throws {
        var here = try started()
        let effects = try here.apply(
            .adopt(PersistedRollout(stable: 7, canary: 2, canaryPercent: 5)), by: .fleet, at: t0)
        #expect(here.stable == 7)
        #expect(effects.contains(.ensureLoaded(version: 7)))
        #expect(!effects.contains(.ensureLoaded(version: 2)))
    }

    @Test("a version found at or below the newest one given a role keeps the routing as it is")
    func versionFoundOnce() throws {
        var here = try started()
        _ = try here.apply(.setTraffic(canary: 2, percent: 10, sticky: false), by: .api, at: t0)
        _ = try here.apply(.promote, by: .api, at: t0)
        var settings = Inferwire_V1_RolloutSettings()
        settings.newVersionRole = .stable
        #expect(try here.apply(.versionFound(3, settings: settings), by: .poller, at: t0) == [])
        #expect(here.stable == 2)
    }

    @Test("state files written before the shared fields existed still read")
    func oldStateFile() throws {
        let json = #"{"stable":3,"canaryPercent":0,"sticky":false,"history":[]}"#
        let rollout = try JSONDecoder().decode(PersistedRollout.self, from: Data(json.utf8))
        #expect(rollout == PersistedRollout(stable: 3))
    }
}
