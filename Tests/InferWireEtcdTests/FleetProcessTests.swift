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

/// A balancing client over the replicas' ports.
func balancedClient(_ replicas: [ServeProcess], retries: Bool = true) async throws -> BalancedClient {
    try await BalancedClient.connect(
        to: .endpoints(replicas.map { Endpoint(host: "127.0.0.1", port: $0.port) }),
        configuration: .defaults {
            $0.retries = retries ? .defaults : .disabled
            // A bound far above loopback answers, so only a lost request fails.
            $0.connection.defaultTimeout = .seconds(30)
        })
}

func echo(_ client: BalancedClient) -> @Sendable (Tensor) async throws -> InferResult {
    { input in try await client.infer(model: "echo", inputs: [input]) }
}

@Suite("Replica processes sharing rollout state", .serialized, .timeLimit(.minutes(5)))
struct FleetProcessTests {
    @Test(
        "a rolling restart of all three replicas (SIGTERM, wait, start) under load from a balancing client fails no request"
    )
    func rollingRestart() async throws {
        try await withServeProcesses { _, replicas in
            let client = try await balancedClient(replicas)
            let tally = LoadTally()
            try await withLoad(workers: 8, tally: tally, send: echo(client)) {
                for replica in replicas {
                    let before = tally.ok
                    #expect(replica.terminate() == 0, "\(replica.name) did not exit cleanly: \(replica.logTail())")
                    try await replica.start()
                    try await eventually("load goes on after \(replica.name) restarted") { tally.ok > before + 100 }
                }
            }
            await client.close()
            #expect(tally.ok > 300)
            #expect(tally.failed == 0, "\(tally.errors)")
        }
    }

    @Test("SIGKILL of one replica under load: no failure with retries on; with them off, no more than it had in flight")
    func killedReplica() async throws {
        for retries in [true, false] {
            try await withServeProcesses { _, replicas in
                let client = try await balancedClient(replicas, retries: retries)
                let victim = Endpoint(host: "127.0.0.1", port: replicas[1].port)
                let tally = LoadTally()
                var inFlight = 0
                try await withLoad(workers: 8, tally: tally, send: echo(client)) {
                    // Stopped first, so the requests it holds are certainly in flight when it dies.
                    replicas[1].pause()
                    var before = tally.ok
                    try await eventually("load flows around the stopped replica") { tally.ok > before + 200 }
                    inFlight = client.outstanding(at: victim)
                    replicas[1].kill()
                    before = tally.ok
                    try await eventually("load goes on after the kill") { tally.ok > before + 200 }
                }
                let retried = client.statistics.retries
                await client.close()
                #expect(inFlight > 0, "no request was held by the stopped replica")
                if retries {
                    #expect(tally.failed == 0, "\(tally.errors)")
                    #expect(retried >= inFlight)
                } else {
                    #expect(tally.failed <= inFlight, "\(tally.failed) failed, \(inFlight) in flight: \(tally.errors)")
                }
            }
        }
    }

    @Test("50 promote and rollback cycles through a balancing client under its load: no failed request, all agree")
    func cyclesUnderLoad() async throws {
        try await withServeProcesses { _, replicas in
            let client = try await balancedClient(replicas)
            let tally = LoadTally()
            try await withLoad(workers: 8, tally: tally, send: echo(client)) {
                for _ in 0..<50 {
                    _ = try await client.setTraffic("echo", canary: 2, percent: 50)
                    _ = try await client.promote("echo")
                    _ = try await client.rollback("echo")
                }
            }
            for replica in replicas {
                let direct = try await InferWireClient.connect(host: "127.0.0.1", port: replica.port)
                let status = try await direct.modelStatus("echo")
                await direct.close()
                #expect(status.rollout.stable == 3)
                #expect(status.rollout.canary == nil)
            }
            let history = try await client.history("echo")
            #expect(history.filter { $0.action == "promote" }.count == 50)
            await client.close()
            #expect(tally.failed == 0, "\(tally.errors)")
        }
    }

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
                try await etcd.restart()
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
