import Foundation
import InferWireClient
import InferWireCore
import Synchronization
import Testing

@testable import InferWireEtcd

/// Three `inferwire serve` processes sharing state in a real etcd, each with its own copy
/// of the repository, started and stopped for `body`.
func withServeProcesses(
    count: Int = 3, _ body: @Sendable (EtcdProcess, [ServeProcess]) async throws -> Void
) async throws {
    let etcd = try EtcdProcess()
    defer { etcd.remove() }
    let probe = EtcdClient(configuration: .init(host: "127.0.0.1", port: etcd.clientPort))
    do {
        try await etcd.ready(probe)
    } catch {
        try? await probe.shutdown()
        throw error
    }
    try await probe.shutdown()
    let replicas = try (0..<count).map {
        try ServeProcess(name: "replica-\($0)", repository: try makeEchoRepository(), etcdPort: etcd.clientPort)
    }
    defer {
        for replica in replicas {
            replica.remove()
            try? FileManager.default.removeItem(atPath: replica.repository)
        }
    }
    for replica in replicas { try await replica.start() }
    do {
        try await body(etcd, replicas)
    } catch {
        for replica in replicas { print("--- \(replica.name) log:\n\(replica.logTail())") }
        throw error
    }
}

@Suite("Replica processes sharing rollout state", .serialized, .timeLimit(.minutes(5)))
struct FleetProcessTests {
    @Test("etcd stopped under load: serving goes on, changes are UNAVAILABLE, readiness says degraded; it recovers")
    func etcdStoppedUnderLoad() async throws {
        try await withServeProcesses { etcd, replicas in
            var clients: [InferWireClient] = []
            for replica in replicas {
                clients.append(try await InferWireClient.connect(host: "127.0.0.1", port: replica.port))
            }
            let pool = clients
            let next = Atomic<Int>(0)
            let tally = LoadTally()
            try await withLoad(
                workers: 6, tally: tally,
                send: { input in
                    try await pool[next.add(1, ordering: .relaxed).oldValue % pool.count].infer(
                        model: "echo", inputs: [input])
                }
            ) {
                etcd.stop()
                do {
                    _ = try await pool[0].setTraffic("echo", canary: 2, percent: 10)
                    Issue.record("a traffic change succeeded with etcd stopped")
                } catch let error as InferWireError {
                    #expect(error.code == .unavailable, "\(error)")
                }
                for replica in replicas {
                    try await eventually("\(replica.name) reports the state store unreachable, still ready") {
                        let body = try await replica.readiness()
                        return body.hasPrefix("ready") && body.contains("rollout state store")
                    }
                    #expect(try await replica.metric("inferwire_state_store_up") == 0)
                }
                try etcd.start()
                try await eventually("a change goes through once etcd is back") {
                    (try? await pool[1].setTraffic("echo", canary: 2, percent: 10)) != nil
                }
                for client in pool {
                    try await eventually("every replica routes by the change") {
                        try await client.modelStatus("echo").rollout.canary == 2
                    }
                }
                for replica in replicas {
                    try await eventually("\(replica.name) reports the store up") {
                        try await replica.metric("inferwire_state_store_up") == 1
                    }
                }
                let leaders = try await replicas.asyncMap { try await $0.metric("inferwire_canary_guard_leader") }
                #expect(leaders.filter { $0 == 1 }.count <= 1, "\(leaders)")
            }
            for client in clients { await client.close() }
            #expect(tally.ok > 0)
            #expect(tally.failed == 0, "\(tally.errors)")
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
