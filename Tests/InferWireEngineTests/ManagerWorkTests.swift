import Foundation
import InferWireCore
import InferWireEngine
import InferWireProto
import Logging
import Synchronization
import Testing

/// A store whose saves can be held at the door, to see what queues behind a slow write.
final class GatedStore: RolloutStore {
    private struct State {
        var saved: [PersistedRollouts] = []
        var holding = false
        var held: [CheckedContinuation<Void, Never>] = []
        var arrivalWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    var saved: [PersistedRollouts] { self.state.withLock { $0.saved } }

    func load() async -> PersistedRollouts? { nil }

    func save(_ state: PersistedRollouts) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let (pass, arrived) = self.state.withLock { s -> (Bool, [CheckedContinuation<Void, Never>]) in
                s.saved.append(state)
                guard s.holding else { return (true, []) }
                s.held.append(continuation)
                defer { s.arrivalWaiters = [] }
                return (false, s.arrivalWaiters)
            }
            for waiter in arrived { waiter.resume() }
            if pass { continuation.resume() }
        }
    }

    func hold() { self.state.withLock { $0.holding = true } }

    func release() {
        let held = self.state.withLock { s in
            s.holding = false
            defer { s.held = [] }
            return s.held
        }
        for continuation in held { continuation.resume() }
    }

    /// Returns once a save is held.
    func waitForHeldSave() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = self.state.withLock { s in
                if !s.held.isEmpty { return true }
                s.arrivalWaiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}

@Suite("Model manager's owned work and persistence")
struct ManagerWorkTests {
    func makeManager(
        _ repo: borrowing TemporaryRepository, store: any RolloutStore = InMemoryRolloutStore(),
        clock: any Clock<Duration> = ContinuousClock()
    ) async throws -> ModelManager {
        let manager = ModelManager(
            repository: ModelRepository(directory: repo.root), configuration: .init(store: store, clock: clock),
            logger: quiet)
        try await manager.start()
        return manager
    }

    func call(_ dispatcher: RequestDispatcher, _ method: Inferwire_V1_Method, _ payload: [UInt8]) async -> Result<
        [UInt8], InferWireError
    > {
        let answer = Answer()
        dispatcher.handle(method: UInt16(method.rawValue), payload: payload, deadline: nil) { answer.set($0) }
        return await answer.value
    }

    @Test(
        "a management change is answered UNAVAILABLE at once when the manager's work is not running, and runs when it is"
    )
    func unavailableWithoutWork() async throws {
        let repo = try TemporaryRepository(versions: [1, 2])
        let manager = try await self.makeManager(repo)
        defer { manager.stopAll() }
        let dispatcher = RequestDispatcher(registry: manager.registry, manager: manager)
        var request = Inferwire_V1_SetTrafficRequest()
        request.name = "echo"
        request.canaryVersion = 1
        request.percent = 10

        let refused = await self.call(dispatcher, .setTraffic, try request.serializedBytes())
        #expect(throws: InferWireError.self) { try refused.get() }
        if case .failure(let error) = refused { #expect(error.code == .unavailable) }
        #expect(try manager.status("echo").rollout.canaryVersion == 0)
        // Queries need no owned work.
        var status = Inferwire_V1_ModelStatusRequest()
        status.name = "echo"
        _ = try await self.call(dispatcher, .modelStatus, try status.serializedBytes()).get()

        try await manager.whileRunning {
            let bytes = try await self.call(dispatcher, .setTraffic, try request.serializedBytes()).get()
            #expect(try Inferwire_V1_SetTrafficResponse(serializedBytes: bytes).rollout.canaryVersion == 1)
        }
        // After shutdown: refused again.
        request.percent = 20
        let late = await self.call(dispatcher, .setTraffic, try request.serializedBytes())
        if case .failure(let error) = late {
            #expect(error.code == .unavailable)
        } else {
            Issue.record("answered after shutdown")
        }
        #expect(try manager.status("echo").rollout.canaryPercent == 10)
    }

    @Test("the old stable version is unloaded when the grace period ends on the manager's clock, not before")
    func graceUnload() async throws {
        let repo = try TemporaryRepository(versions: [1, 2])
        let clock = ManualClock()
        let manager = try await self.makeManager(repo, clock: clock)
        defer { manager.stopAll() }
        try await manager.whileRunning {
            _ = try await manager.setTraffic("echo", canary: 1, percent: 10, sticky: false)
            _ = try await manager.promote("echo")
            await clock.waitForSleepers(1)
            clock.advance(by: .seconds(599))
            #expect(try manager.rollout("echo").phases[2] == .ready)
            clock.advance(by: .seconds(1))
            await manager.waitUntilIdle()
            let rollout = try manager.rollout("echo")
            #expect(rollout.phases[2] == .unloaded)
            #expect(rollout.previousStable == nil)
            #expect(rollout.history.last.map { ($0.action, $0.actor) } ?? ("", "") == ("unload", "grace-period"))
        }
    }

    @Test("a grace period superseded by a later promotion unloads nothing when it ends")
    func graceSuperseded() async throws {
        let repo = try TemporaryRepository(versions: [1, 2, 3])
        let clock = ManualClock()
        let manager = try await self.makeManager(repo, clock: clock)
        defer { manager.stopAll() }
        try await manager.whileRunning {
            _ = try await manager.setTraffic("echo", canary: 2, percent: 10, sticky: false)
            _ = try await manager.promote("echo")  // 3 → previous, grace timer 1
            await clock.waitForSleepers(1)
            clock.advance(by: .seconds(300))
            _ = try await manager.setTraffic("echo", canary: 1, percent: 10, sticky: false)
            _ = try await manager.promote("echo")  // 2 → previous, grace timer 2
            await clock.waitForSleepers(2)
            clock.advance(by: .seconds(300))  // timer 1 ends: superseded
            #expect(clock.sleeperCount == 1)
            #expect(try manager.rollout("echo").phases[3] == .ready)
            #expect(try manager.rollout("echo").phases[2] == .ready)
            clock.advance(by: .seconds(300))  // timer 2 ends: version 2 goes
            await manager.waitUntilIdle()
            #expect(try manager.rollout("echo").phases[2] == .unloaded)
            #expect(try manager.rollout("echo").phases[3] == .ready)
        }
    }

    @Test("shutdown cancels a pending grace-period unload and waits for it")
    func shutdownCancelsTimers() async throws {
        let repo = try TemporaryRepository(versions: [1, 2])
        let clock = ManualClock()
        let manager = try await self.makeManager(repo, clock: clock)
        defer { manager.stopAll() }
        try await manager.whileRunning {
            _ = try await manager.setTraffic("echo", canary: 1, percent: 10, sticky: false)
            _ = try await manager.promote("echo")
            await clock.waitForSleepers(1)
        }
        // The owned work has ended: the timer is gone without unloading anything.
        #expect(clock.sleeperCount == 0)
        await manager.waitUntilIdle()
        clock.advance(by: .seconds(3600))
        #expect(try manager.rollout("echo").phases[2] == .ready)
        #expect(!manager.isRunning)
    }

    @Test("changes made while a save is under way are saved once, newest state last")
    func savesCoalesce() async throws {
        let repo = try TemporaryRepository(versions: [1, 2])
        let store = GatedStore()
        let manager = try await self.makeManager(repo, store: store)
        defer { manager.stopAll() }
        #expect(store.saved.count == 1)  // start-up
        store.hold()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { _ = try await manager.setTraffic("echo", canary: 1, percent: 10, sticky: false) }
            await store.waitForHeldSave()
            for percent in [20, 30] {
                group.addTask { _ = try await manager.setTraffic("echo", canary: 1, percent: percent, sticky: false) }
                while try manager.rollout("echo").canaryPercent != percent { await Task.yield() }
            }
            store.release()
            try await group.waitForAll()
        }
        let percents = store.saved.map { $0.models["echo"]?.canaryPercent }
        #expect(percents == [0, 10, 30])
    }

    @Test("a management change returns to the calling thread before its save is written, and is answered once it is")
    func saveOffTheCallingThread() async throws {
        let repo = try TemporaryRepository(versions: [1, 2])
        let store = GatedStore()
        let manager = try await self.makeManager(repo, store: store)
        defer { manager.stopAll() }
        let dispatcher = RequestDispatcher(registry: manager.registry, manager: manager)
        var request = Inferwire_V1_SetTrafficRequest()
        request.name = "echo"
        request.canaryVersion = 1
        request.percent = 10
        let payload: [UInt8] = try request.serializedBytes()
        try await manager.whileRunning {
            store.hold()
            let answered = Atomic<Bool>(false)
            let answer = Answer()
            // Were the save on this thread, handle would not return while the store holds it.
            dispatcher.handle(method: UInt16(Inferwire_V1_Method.setTraffic.rawValue), payload: payload, deadline: nil)
            {
                answered.store(true, ordering: .relaxed)
                answer.set($0)
            }
            await store.waitForHeldSave()
            let answeredEarly = answered.load(ordering: .relaxed)
            #expect(!answeredEarly)
            store.release()
            _ = try await answer.value.get()
            #expect(store.saved.last?.models["echo"]?.canaryPercent == 10)
        }
    }

    @Test("the file store saves atomically in format 1, reads files written before, and moves a corrupt file aside")
    func fileStore() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("iw-store-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/state.json"
        let store = FileRolloutStore(path: path, logger: quiet)
        #expect(await store.load() == nil)

        let entry = RolloutHistoryEntry(
            unixMillis: 5, action: "promote", detail: "version 2 stable (was 1)", actor: "api", model: "echo")
        let state = PersistedRollouts(models: [
            "echo": PersistedRollout(stable: 2, canaryPercent: 0, previousStable: 1, history: [entry])
        ])
        await store.save(state)
        #expect(await store.load() == state)
        let json =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
        #expect(json?["format"] as? Int == 1)
        // No temporary file is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["state.json"])

        // As earlier versions wrote it.
        try #"""
        { "format" : 1, "models" : { "echo" : { "canary" : 3, "canaryPercent" : 5, "history" : [
          { "action" : "traffic", "actor" : "api", "detail" : "canary version 3 at 5%", "model" : "echo", "unixMillis" : 17 } ],
          "stable" : 2, "sticky" : false } } }
        """#.write(toFile: path, atomically: true, encoding: .utf8)
        let legacy = try #require(await store.load()?.models["echo"])
        #expect(legacy.stable == 2)
        #expect(legacy.canary == 3)
        #expect(legacy.previousStable == nil)
        #expect(legacy.history.first?.detail == "canary version 3 at 5%")

        try "{ not json".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(await store.load() == nil)
        let aside = try FileManager.default.contentsOfDirectory(atPath: directory).filter {
            $0.hasPrefix("state.json.corrupt-")
        }
        #expect(aside.count == 1)
    }

    @Test("the in-memory store hands back what was saved")
    func inMemoryStore() async throws {
        let repo = try TemporaryRepository(versions: [1, 2])
        let store = InMemoryRolloutStore()
        do {
            let manager = try await self.makeManager(repo, store: store)
            _ = try await manager.setTraffic("echo", canary: 1, percent: 15, sticky: true)
            manager.stopAll()
        }
        #expect(store.saved?.models["echo"]?.canaryPercent == 15)
        let restarted = try await self.makeManager(repo, store: store)
        defer { restarted.stopAll() }
        #expect(try restarted.status("echo").rollout.canaryVersion == 1)
        #expect(try restarted.status("echo").rollout.sticky)
    }
}
