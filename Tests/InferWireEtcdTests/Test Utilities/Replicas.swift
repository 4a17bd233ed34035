import Foundation
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireServer
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing

@testable import InferWireEtcd

let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// A model repository with an `echo` identity model in `versions`, batched.
func makeEchoRepository(versions: [Int64] = [1, 2, 3]) throws -> String {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-fleet-\(UUID())").path
    for version in versions {
        try FileManager.default.createDirectory(atPath: root + "/echo/\(version)", withIntermediateDirectories: true)
    }
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

/// One replica running in this process: a manager sharing rollout state through etcd and a
/// server on a free loopback port.
struct Replica: Sendable {
    let name: String
    let manager: ModelManager
    let port: Int
    let client: InferWireClient

    /// The version an unlabelled request to `echo` answers from, with the canary at 0 %.
    func answeringVersion() async throws -> Int64 {
        try await self.client.infer(
            model: "echo", inputs: [Tensor(name: "X", values: [1, 2, 3, 4] as [Float], shape: [1, 4])]
        )
        .modelVersion
    }
}

/// How the test replicas run.
struct ReplicaSettings: Sendable {
    var reportInterval: Duration = .milliseconds(100)
    var retryInterval: Duration = .milliseconds(100)
    var startWithoutStore = false
}

/// Holds writes once armed until `count` of them wait, then lets them all go at once: two
/// operators acting at the same moment, made certain.
final class WriteGate: Sendable {
    private let state = Mutex<(expected: Int, waiting: [CheckedContinuation<Void, Never>])>((0, []))

    /// From now on writes wait until `count` of them are waiting.
    func arm(holding count: Int) {
        self.state.withLock { $0.expected = count }
    }

    func pass() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let release = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
                guard state.expected > 0 else { return [continuation] }
                state.waiting.append(continuation)
                guard state.waiting.count >= state.expected else { return [] }
                state.expected = 0
                defer { state.waiting = [] }
                return state.waiting
            }
            for waiter in release { waiter.resume() }
        }
    }
}

/// An etcd fleet store whose writes pass a ``WriteGate`` first.
struct GatedStore: FleetStateStore {
    let inner: EtcdFleetStore
    let gate: WriteGate

    var location: String { self.inner.location }
    func load() async throws -> (rollouts: [String: SharedRollout], revision: Int64) { try await self.inner.load() }
    func read(model: String) async throws -> SharedRollout? { try await self.inner.read(model: model) }
    func write(model: String, rollout: PersistedRollout, expectedRevision: Int64) async throws -> SharedRolloutWrite {
        await self.gate.pass()
        return try await self.inner.write(model: model, rollout: rollout, expectedRevision: expectedRevision)
    }
    func watch(from revision: Int64, _ handle: @escaping @Sendable ([String: SharedRollout]) async -> Void) async throws
    {
        try await self.inner.watch(from: revision, handle)
    }
    func publish(_ report: ReplicaReport) async throws { try await self.inner.publish(report) }
    func reports() async throws -> [ReplicaReport] { try await self.inner.reports() }
    func leadGuard(as replica: String) async throws -> Bool { try await self.inner.leadGuard(as: replica) }
    func leave() async { await self.inner.leave() }
}

/// Runs one replica per repository, sharing state in `etcd` under `prefix`, for the
/// duration of `body`; then shuts them down gracefully.
/// - Parameter wrap: wraps a replica's store (to gate its writes, say).
func withReplicas(
    repositories: [String], etcd: EtcdProcess, prefix: String = "/inferwire", settings: ReplicaSettings = .init(),
    loaders: [any ModelLoader] = ModelRepository.builtinLoaders,
    wrap: @Sendable (Int, EtcdFleetStore) -> any FleetStateStore = { $1 },
    _ body: @Sendable ([Replica]) async throws -> Void
) async throws {
    var stores: [EtcdFleetStore] = []
    var managers: [ModelManager] = []
    for (index, root) in repositories.enumerated() {
        let store = EtcdFleetStore(
            configuration: .init(
                host: "127.0.0.1", port: etcd.clientPort, prefix: prefix, leaseSeconds: 5,
                requestTimeout: .seconds(10)))
        stores.append(store)
        let manager = ModelManager(
            repository: ModelRepository(directory: root, loaders: loaders),
            configuration: .init(
                fleet: .init(
                    store: wrap(index, store), replica: "replica-\(index)",
                    startWithoutStore: settings.startWithoutStore, reportInterval: settings.reportInterval,
                    retryInterval: settings.retryInterval)),
            logger: quiet)
        managers.append(manager)
    }
    defer {
        for manager in managers { manager.stopAll() }
    }
    do {
        for manager in managers { try await manager.start() }
        try await runServers(managers: managers, body)
    } catch {
        for store in stores { try? await store.shutdown() }
        throw error
    }
    for store in stores { try await store.shutdown() }
}

private func runServers(managers: [ModelManager], _ body: @Sendable ([Replica]) async throws -> Void) async throws {
    let (ports, continuation) = AsyncStream.makeStream(of: (Int, Int).self)
    var groups: [ServiceGroup] = []
    for (index, manager) in managers.enumerated() {
        let server = try InferWireServer(
            configuration: .init(host: "127.0.0.1", port: 0),
            dispatcher: RequestDispatcher(registry: manager.registry, manager: manager), logger: quiet,
            onListening: { continuation.yield((index, $0.port!)) })
        groups.append(
            ServiceGroup(
                configuration: .init(
                    services: [
                        ModelManagerService(manager: manager, guardInterval: .milliseconds(200)), server,
                    ], logger: quiet)))
    }
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        for group in groups { tasks.addTask { try await group.run() } }
        var found: [Int: Int] = [:]
        for await (index, port) in ports {
            found[index] = port
            if found.count == managers.count { break }
        }
        var replicas: [Replica] = []
        for (index, manager) in managers.enumerated() {
            replicas.append(
                Replica(
                    name: "replica-\(index)", manager: manager, port: found[index]!,
                    client: try await InferWireClient.connect(host: "127.0.0.1", port: found[index]!)))
        }
        let result: Result<Void, any Error>
        do { result = .success(try await body(replicas)) } catch { result = .failure(error) }
        for replica in replicas { await replica.client.close() }
        for group in groups { await group.triggerGracefulShutdown() }
        try await tasks.waitForAll()
        try result.get()
    }
}

/// Waits until `condition` holds, checking every few milliseconds, up to a bound far above
/// what loopback needs (a loaded machine must not fail the test); records an issue if it
/// never does.
func eventually(
    _ what: String, within bound: Duration = .seconds(30), sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + bound
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    Issue.record("never happened: \(what)", sourceLocation: sourceLocation)
}

/// The identity model, except in version directories holding a `FAULTY` file: there every
/// execution throws (a canary that fails).
struct FaultyWhenMarkedLoader: ModelLoader {
    var platform: String { "faulty_when_marked" }

    struct Broken: Error {}

    struct BrokenModel: InferenceModel {
        let signature: ModelSignature
        var isLightweight: Bool { true }
        func execute(_ inputs: [Tensor]) throws -> [Tensor] { throw Broken() }
    }

    func load(configuration: ModelConfiguration, versionDirectory: String) throws -> any InferenceModel {
        var identity = configuration
        identity.platform = "identity"
        let model = try IdentityModelLoader().load(configuration: identity, versionDirectory: versionDirectory)
        if FileManager.default.fileExists(atPath: versionDirectory + "/FAULTY") {
            return BrokenModel(signature: model.signature)
        }
        return model
    }
}

/// Model `g`: version 1 fails every request (the canary under test), version 2 is the
/// identity (stable); its rollout guard allows 5 points more errors once `minRequests`
/// canary requests were seen across the fleet.
func makeGuardedRepository(minRequests: Int) throws -> String {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-fleet-guard-\(UUID())").path
    for version in [1, 2] {
        try FileManager.default.createDirectory(atPath: "\(root)/g/\(version)", withIntermediateDirectories: true)
    }
    FileManager.default.createFile(atPath: "\(root)/g/1/FAULTY", contents: Data())
    try """
    platform: "faulty_when_marked"
    version_policy { all { } }
    input { name: "X" datatype: FP32 shape: [ 4 ] }
    output { name: "Y" datatype: FP32 shape: [ 4 ] }
    rollout { guard { max_error_rate_increase: 0.05 window_seconds: 60 min_requests: \(minRequests) } }
    """.write(toFile: "\(root)/g/config.pbtxt", atomically: true, encoding: .utf8)
    return root
}
