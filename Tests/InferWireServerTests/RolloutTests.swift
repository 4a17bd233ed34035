import Foundation
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireProto
import InferWireServer
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing

/// A server whose models are managed: load, traffic, promote, rollback over the protocol.
func withManagedServer<T: Sendable>(
    repository root: String, _ body: @Sendable (_ port: Int, _ manager: ModelManager) async throws -> T
) async throws -> T {
    let manager = ModelManager(
        repository: ModelRepository(directory: root), configuration: .init(statePath: root + "/.inferwire-state.json"),
        logger: quiet)
    try await manager.start()
    // The manager's owned work runs the management operations; it stops after the server.
    return try await withServer(
        dispatcher: RequestDispatcher(registry: manager.registry, manager: manager),
        services: [ModelManagerService(manager: manager)]
    ) { port in
        try await body(port, manager)
    }
}

/// An `echo` identity model with versions 1 and 2, batched, so requests queue on instances.
func makeEchoRepository() throws -> String {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-rollout-\(UUID())").path
    try FileManager.default.createDirectory(atPath: root + "/echo/1", withIntermediateDirectories: true)
    try FileManager.default.createDirectory(atPath: root + "/echo/2", withIntermediateDirectories: true)
    try #"""
    platform: "identity"
    max_batch_size: 16
    version_policy { all { } }
    input { name: "X" datatype: FP32 shape: [ 4 ] }
    output { name: "Y" datatype: FP32 shape: [ 4 ] }
    dynamic_batching { }
    """#.write(toFile: root + "/echo/config.pbtxt", atomically: true, encoding: .utf8)
    return root
}

/// Shared by the load workers: a stop flag and what they saw.
final class LoadTally: Sendable {
    let stop = Atomic<Bool>(false)
    let counts = Mutex<(ok: Int, failed: Int, versions: [Int64: Int], errors: [String])>((0, 0, [:], []))
}

@Suite("Rollout under load", .timeLimit(.minutes(2)))
struct RolloutTests {
    @Test("50 canary/promote/rollback cycles and an unload under continuous load fail no request")
    func cyclesUnderLoad() async throws {
        let root = try makeEchoRepository()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try await withManagedServer(repository: root) { port, manager in
            let admin = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let tally = LoadTally()
            try await withThrowingTaskGroup(of: Void.self) { load in
                for worker in 0..<4 {
                    load.addTask {
                        let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
                        var i = 0
                        while !tally.stop.load(ordering: .relaxed) {
                            let x = Tensor(name: "X", values: [Float(worker), Float(i), 1, 2], shape: [1, 4])
                            do {
                                let result = try await client.infer(model: "echo", inputs: [x])
                                let ok = result["Y"]?.values(as: Float.self) == [Float(worker), Float(i), 1, 2]
                                tally.counts.withLock {
                                    if ok { $0.ok += 1 } else { $0.failed += 1 }
                                    $0.versions[result.modelVersion, default: 0] += 1
                                }
                            } catch {
                                tally.counts.withLock {
                                    $0.failed += 1
                                    $0.errors.append("\(error)")
                                }
                            }
                            i += 1
                        }
                        await client.close()
                    }
                }
                // The workers stop however the admin side ends.
                defer { tally.stop.store(true, ordering: .relaxed) }
                for _ in 0..<50 {
                    _ = try await admin.setTraffic("echo", canary: 1, percent: 10)
                    _ = try await admin.promote("echo")
                    _ = try await admin.rollback("echo")
                }
                // Version 1 is now the previous stable: unload it while requests flow.
                let unloaded = try await admin.unloadModel("echo", version: 1)
                #expect(unloaded.state == .unloaded)
                tally.stop.store(true, ordering: .relaxed)
                try await load.waitForAll()
            }
            let (ok, failed, versions, errors) = tally.counts.withLock { ($0.ok, $0.failed, $0.versions, $0.errors) }
            #expect(failed == 0, "errors: \(errors.prefix(3))")
            #expect(ok > 200)
            #expect(Set(versions.keys).isSubset(of: [1, 2]))
            #expect(try manager.status("echo").rollout.stableVersion == 2)
            let history = try await admin.history("echo")
            #expect(history.filter { $0.action == "promote" }.count == 50)
            await admin.close()
        }
    }

    @Test("management calls can load a new version and route a canary share to it over the wire")
    func canaryOverTheWire() async throws {
        let root = try makeEchoRepository()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try await withManagedServer(repository: root) { port, _ in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            try FileManager.default.createDirectory(atPath: root + "/echo/3", withIntermediateDirectories: true)
            let loaded = try await client.loadModel("echo", version: 3)
            #expect(loaded.state == .ready)
            _ = try await client.setTraffic("echo", canary: 3, percent: 50)
            var seen: [Int64: Int] = [:]
            for _ in 0..<400 {
                let result = try await client.infer(
                    model: "echo", inputs: [Tensor(name: "X", values: [1, 2, 3, 4] as [Float], shape: [1, 4])])
                seen[result.modelVersion, default: 0] += 1
            }
            // Binomial(400, 0.5): sd 10; ±5 sd.
            #expect((150...250).contains(seen[3] ?? 0))
            #expect(seen[3, default: 0] + seen[2, default: 0] == 400)
            let status = try await client.modelStatus("echo")
            #expect(status.versions.map(\.version) == [1, 2, 3])
            await #expect { try await client.loadModel("nope", version: 1) } throws: {
                ($0 as? InferWireError)?.code == .notFound
            }
            await client.close()
        }
    }

    @Test(
        "graceful shutdown ends the manager's service with a grace timer pending; changes after it are answered UNAVAILABLE"
    )
    func shutdownWithPendingGraceTimer() async throws {
        let root = try makeEchoRepository()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let clock = ManualClock()
        let manager = ModelManager(
            repository: ModelRepository(directory: root), configuration: .init(clock: clock), logger: quiet)
        try await manager.start()
        defer { manager.stopAll() }
        let dispatcher = RequestDispatcher(registry: manager.registry, manager: manager)
        @Sendable func call(_ method: Inferwire_V1_Method, _ payload: [UInt8]) async -> Result<[UInt8], InferWireError>
        {
            await withCheckedContinuation { continuation in
                dispatcher.handle(method: UInt16(method.rawValue), payload: payload, deadline: nil) {
                    continuation.resume(returning: $0)
                }
            }
        }
        var traffic = Inferwire_V1_SetTrafficRequest()
        traffic.name = "echo"
        traffic.canaryVersion = 1
        traffic.percent = 10
        var promote = Inferwire_V1_PromoteRequest()
        promote.name = "echo"

        let group = ServiceGroup(
            configuration: .init(services: [ModelManagerService(manager: manager, guardInterval: nil)], logger: quiet))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            while !manager.isRunning { await Task.yield() }
            _ = try await call(.setTraffic, try traffic.serializedBytes()).get()
            _ = try await call(.promote, try promote.serializedBytes()).get()
            await clock.waitForSleepers(1)  // version 2's grace period
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(clock.sleeperCount == 0)
        #expect(try manager.status("echo").versions.first { $0.version == 2 }?.state == .ready)
        let late = await call(.setTraffic, try traffic.serializedBytes())
        #expect(throws: InferWireError.self) { try late.get() }
        if case .failure(let error) = late { #expect(error.code == .unavailable) }
    }
}
