import Foundation
import InferWireClient
import InferWireCore
import InferWireProto
import Testing

@testable import InferWireEngine
@testable import InferWireEtcd

@Suite("Replicas sharing rollout state in etcd", .serialized, .timeLimit(.minutes(3)))
struct FleetTests {
    @Test("traffic, promote and rollback through any one replica route all three")
    func changesReachEveryReplica() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.remove() }
        let roots = try (0..<3).map { _ in try makeEchoRepository() }
        try await withReplicas(repositories: roots, etcd: etcd) { replicas in
            // Every replica starts from the shared state the first one wrote: stable 3.
            for replica in replicas { #expect(try replica.manager.rollout("echo").stable == 3) }

            _ = try await replicas[0].client.setTraffic("echo", canary: 2, percent: 0)
            try await eventually("every replica has canary 2") {
                replicas.allSatisfy { (try? $0.manager.rollout("echo").canary) == 2 }
            }
            _ = try await replicas[1].client.promote("echo")
            try await eventually("every replica routes to version 2") {
                replicas.allSatisfy { (try? $0.manager.rollout("echo"))?.stable == 2 }
            }
            for replica in replicas { #expect(try await replica.answeringVersion() == 2) }

            _ = try await replicas[2].client.rollback("echo")
            try await eventually("every replica routes to version 3 again") {
                replicas.allSatisfy { (try? $0.manager.rollout("echo"))?.stable == 3 }
            }
            for replica in replicas { #expect(try await replica.answeringVersion() == 3) }

            // History lives in the shared state: every replica reports the same entries.
            let histories = try replicas.map { try $0.manager.history("echo").map(\.action) }
            #expect(histories.allSatisfy { $0 == histories[0] })
            #expect(Array(histories[0].suffix(3)) == ["traffic", "promote", "rollback"])
        }
    }

    @Test("changes through different replicas one right after another build on each other, none refused")
    func sequentialChanges() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.remove() }
        let roots = try (0..<3).map { _ in try makeEchoRepository() }
        try await withReplicas(repositories: roots, etcd: etcd) { replicas in
            for cycle in 0..<10 {
                _ = try await replicas[cycle % 3].client.setTraffic("echo", canary: 2, percent: 50)
                _ = try await replicas[(cycle + 1) % 3].client.promote("echo")
                _ = try await replicas[(cycle + 2) % 3].client.rollback("echo")
            }
            try await eventually("every replica has stable 3 and no canary") {
                replicas.allSatisfy { replica in
                    (try? replica.manager.rollout("echo")).map { $0.stable == 3 && $0.canary == nil } ?? false
                }
            }
            #expect(try replicas[0].manager.history("echo").filter { $0.action == "promote" }.count == 10)
        }
    }

    @Test("two operators acting at once: one change wins, the other is refused naming the state, all agree")
    func concurrentChanges() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.remove() }
        let roots = try (0..<3).map { _ in try makeEchoRepository() }
        let gate = WriteGate()
        let gated: @Sendable (Int, EtcdFleetStore) -> any FleetStateStore = { index, store in
            index < 2 ? GatedStore(inner: store, gate: gate) : store
        }
        try await withReplicas(repositories: roots, etcd: etcd, wrap: gated) { replicas in
            gate.arm(holding: 2)
            @Sendable func traffic(_ replica: Replica, _ canary: Int64) async -> Result<Rollout, any Error> {
                do { return .success(try await replica.client.setTraffic("echo", canary: canary, percent: 100)) } catch
                {
                    return .failure(error)
                }
            }
            async let first = traffic(replicas[0], 1)
            async let second = traffic(replicas[1], 2)
            let results = await [first, second]
            let refused = results.compactMap { result -> InferWireError? in
                if case .failure(let error) = result { return error as? InferWireError }
                return nil
            }
            #expect(results.filter { if case .success = $0 { true } else { false } }.count == 1)
            #expect(refused.count == 1)
            #expect(refused.first?.code == .aborted)
            let winner: Int64 = if case .success = results[0] { 1 } else { 2 }
            #expect(refused.first?.message.contains("canary \(winner) at 100%") == true, "\(refused)")
            try await eventually("every replica has the winner's canary") {
                replicas.allSatisfy { (try? $0.manager.rollout("echo").canary) == winner }
            }
            // A later change through the refused replica applies on top of the winner's.
            _ = try await replicas[winner == 1 ? 1 : 0].client.promote("echo")
            try await eventually("every replica promoted the winner") {
                replicas.allSatisfy { (try? $0.manager.rollout("echo"))?.stable == winner }
            }
        }
    }

    @Test("etcd stopped: serving goes on, changes are UNAVAILABLE, readiness says why; it comes back and reconciles")
    func etcdOutage() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.remove() }
        let roots = try (0..<3).map { _ in try makeEchoRepository() }
        try await withReplicas(repositories: roots, etcd: etcd) { replicas in
            _ = try await replicas[0].client.setTraffic("echo", canary: 2, percent: 0)
            _ = try await replicas[0].client.promote("echo")
            try await eventually("every replica routes to version 2") {
                replicas.allSatisfy { (try? $0.manager.rollout("echo"))?.stable == 2 }
            }
            etcd.stop()
            try await eventually("every replica knows the store is unreachable") {
                replicas.allSatisfy { $0.manager.sharedStateProblem != nil }
            }
            for replica in replicas {
                #expect(try await replica.answeringVersion() == 2)
                #expect(replica.manager.sharedStateProblem?.contains("127.0.0.1:\(etcd.clientPort)") == true)
            }
            do {
                _ = try await replicas[1].client.rollback("echo")
                Issue.record("a rollback succeeded with etcd stopped")
            } catch let error as InferWireError {
                #expect(error.code == .unavailable)
                #expect(error.message.contains("rollout state store"))
            }
            // Status still answers from what the replica last saw.
            #expect(try await replicas[1].client.modelStatus("echo").rollout.stable == 2)

            try await etcd.restart()
            try await eventually("every replica reconciles once etcd is back") {
                replicas.allSatisfy { $0.manager.sharedStateProblem == nil }
            }
            _ = try await replicas[2].client.rollback("echo")
            try await eventually("the rollback reaches every replica") {
                replicas.allSatisfy { (try? $0.manager.rollout("echo"))?.stable == 3 }
            }
        }
    }

    @Test("a replica that lacks a version the fleet names marks it FAILED, and status shows it from any replica")
    func missingVersion() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.remove() }
        let roots = [try makeEchoRepository(), try makeEchoRepository(), try makeEchoRepository(versions: [1, 2])]
        try await withReplicas(repositories: roots, etcd: etcd) { replicas in
            // The third replica's highest version is 2, yet it follows the fleet's stable 3.
            #expect(try replicas[2].manager.rollout("echo").stable == 3)
            try await eventually("the third replica marks version 3 FAILED") {
                try replicas[2].manager.status("echo").versions.contains { $0.version == 3 && $0.state == .failed }
            }
            do {
                _ = try await replicas[2].answeringVersion()
                Issue.record("a replica without the fleet's stable version answered")
            } catch let error as InferWireError {
                #expect(error.code == .unavailable)
            }
            try await eventually("the first replica's status shows every replica, the third with version 3 FAILED") {
                let status = try await replicas[0].client.modelStatus("echo")
                guard status.replicas.map(\.replica) == ["replica-0", "replica-1", "replica-2"] else { return false }
                let third = status.replicas[2].versions.first { $0.version == 3 }
                return third?.state == .failed && third?.reason.contains("not in this replica's repository") == true
            }
        }
    }

    @Test("one replica at a time leads the canary guard; the lead passes on when it leaves")
    func guardLead() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.remove() }
        let roots = try (0..<2).map { _ in try makeEchoRepository() }
        try await withReplicas(repositories: roots, etcd: etcd) { replicas in
            try await eventually("one replica leads") {
                replicas.filter(\.manager.leadsCanaryGuard).count == 1
            }
            let leader = replicas.first(where: \.manager.leadsCanaryGuard)!
            let other = replicas.first { !$0.manager.leadsCanaryGuard }!
            for _ in 0..<3 {
                try await Task.sleep(for: .milliseconds(150))
                #expect(replicas.filter(\.manager.leadsCanaryGuard).count <= 1)
            }
            await leader.manager.leaveFleet()
            try await eventually("the other replica takes the lead") { other.manager.leadsCanaryGuard }
        }
    }

    @Test("the guard leader rolls back a canary on the fleet's counts, which no replica reaches alone")
    func guardOnFleetCounts() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.remove() }
        let roots = try (0..<3).map { _ in try makeGuardedRepository(minRequests: 30) }
        try await withReplicas(repositories: roots, etcd: etcd, loaders: [FaultyWhenMarkedLoader()]) { replicas in
            _ = try await replicas[0].client.setTraffic("g", canary: 1, percent: 10)
            try await eventually("every replica has the canary") {
                replicas.allSatisfy { (try? $0.manager.rollout("g").canary) == 1 }
            }
            // 12 failing canary requests per replica: 36 across the fleet, at least 30 needed.
            for replica in replicas {
                for _ in 0..<12 {
                    do {
                        _ = try await replica.client.infer(
                            model: "g", version: 1,
                            inputs: [Tensor(name: "X", values: [1, 2, 3, 4] as [Float], shape: [4])])
                        Issue.record("the failing canary answered")
                    } catch let error as InferWireError {
                        #expect(error.code == .internal, "\(error)")
                    }
                }
            }
            try await eventually("every replica has the canary withdrawn") {
                replicas.allSatisfy { (try? $0.manager.rollout("g"))?.canary == nil }
            }
            let last = try replicas[1].manager.history("g").last
            #expect(last?.action == "auto-rollback")
            #expect(last?.actor == "guard")
            #expect(last?.detail.contains("across the fleet") == true, "\(String(describing: last))")
        }
    }

    @Test("a replica starting while etcd is down waits for it, or with the fallback starts and reconciles later")
    func startWithoutEtcd() async throws {
        let etcd = try EtcdProcess()
        defer { etcd.remove() }
        etcd.stop()
        let root = try makeEchoRepository()
        let store = EtcdFleetStore(
            configuration: .init(host: "127.0.0.1", port: etcd.clientPort, requestTimeout: .seconds(10)))
        let waiting = ModelManager(
            repository: ModelRepository(directory: root),
            configuration: .init(fleet: .init(store: store, replica: "waiting", retryInterval: .milliseconds(50))),
            logger: quiet)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await waiting.start() }
            try await eventually("the waiting replica reports the store unreachable") {
                waiting.sharedStateProblem != nil
            }
            group.cancelAll()
            await #expect(throws: CancellationError.self) { try await group.next() }
        }
        waiting.stopAll()
        try await store.shutdown()

        try await withReplicas(
            repositories: [root], etcd: etcd, settings: .init(startWithoutStore: true)
        ) { replicas in
            #expect(replicas[0].manager.sharedStateProblem != nil)
            #expect(try await replicas[0].answeringVersion() == 3)
            try await etcd.restart()
            try await eventually("the replica writes its state once etcd answers") {
                replicas[0].manager.sharedStateProblem == nil
            }
            let (rollouts, _) = try await EtcdFleetStore(
                configuration: .init(host: "127.0.0.1", port: etcd.clientPort)
            ).loadAndClose()
            #expect(rollouts["echo"]?.rollout.stable == 3)
        }
    }

    @Test("fleet-wide windows add up every replica's counts; p99 comes from the merged buckets")
    func windowTotals() {
        var fast = [UInt64](repeating: 0, count: 32)
        fast[3] = 99
        var slow = [UInt64](repeating: 0, count: 32)
        slow[10] = 2
        let total = ReplicaReport.Window.total([
            .init(version: 2, span: 30, requests: 99, failures: 1, latency: fast),
            .init(version: 2, span: 30, requests: 2, failures: 2, latency: slow),
        ])
        #expect(total.requests == 101)
        #expect(total.failures == 3)
        // 99 of 101 at ≤8 µs is below 99 %: the p99 falls in the slow replica's bucket.
        #expect(total.p99Micros == 1 << 10)
    }
}

extension EtcdFleetStore {
    /// Reads every shared rollout, then closes the store.
    func loadAndClose() async throws -> (rollouts: [String: SharedRollout], revision: Int64) {
        do {
            let loaded = try await self.load()
            try await self.shutdown()
            return loaded
        } catch {
            try? await self.shutdown()
            throw error
        }
    }
}
