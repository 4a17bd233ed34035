import CoreMetrics
import Foundation
import InferWireCore
import InferWireEngine
import InferWireProto
import Logging
import MetricsTestKit
import Testing

/// A repository of built-in identity models in a temporary directory.
struct TemporaryRepository: ~Copyable {
    let root: String

    init(versions: [Int64]) throws {
        self.root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-manager-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(self.root)/echo", withIntermediateDirectories: true)
        try
            #"platform: "identity" max_batch_size: 8 version_policy { all { } } input { name: "X" datatype: FP32 shape: [2] } output { name: "Y" datatype: FP32 shape: [2] }"#
            .write(toFile: "\(self.root)/echo/config.pbtxt", atomically: true, encoding: .utf8)
        for version in versions { try self.addVersion(version) }
    }

    func addVersion(_ version: Int64) throws {
        try FileManager.default.createDirectory(
            atPath: "\(self.root)/echo/\(version)", withIntermediateDirectories: true)
    }

    var statePath: String { self.root + "/.inferwire-state.json" }

    func manager(metricsFactory: (any MetricsFactory)? = nil) async throws -> ModelManager {
        let manager = ModelManager(
            repository: ModelRepository(directory: self.root),
            configuration: .init(statePath: self.statePath, metricsFactory: metricsFactory), logger: quiet)
        try await manager.start()
        return manager
    }

    deinit { try? FileManager.default.removeItem(atPath: self.root) }
}

@Suite("Model manager")
struct ModelManagerTests {
    func version(_ manager: ModelManager, key: String = "") throws -> Int64 {
        try manager.registry.snapshot().resolve("echo", nil, routingKey: key).version
    }

    @Test("start-up serves the highest version; promote and rollback switch at once and are recorded")
    func promoteRollback() async throws {
        let repo = try TemporaryRepository(versions: [1, 2])
        let manager = try await repo.manager()
        defer { manager.stopAll() }
        #expect(try self.version(manager) == 2)

        try await repo.addVersion(3)
        let loaded = try await manager.load("echo", version: 3)
        #expect(loaded.state == .ready)
        #expect(try self.version(manager) == 2)  // loading does not route

        var rollout = try await manager.setTraffic("echo", canary: 3, percent: 100, sticky: false)
        #expect(rollout.canaryVersion == 3)
        #expect(try self.version(manager) == 3)
        #expect(
            try manager.registry.snapshot().resolve(
                "echo",
                {
                    var s = Inferwire_V1_VersionSelector()
                    s.label = "stable"
                    return s
                }()
            ).version == 2)

        rollout = try await manager.promote("echo")
        #expect(rollout.stableVersion == 3)
        #expect(rollout.previousStableVersion == 2)
        #expect(rollout.canaryVersion == 0)

        rollout = try await manager.rollback("echo")
        #expect(rollout.stableVersion == 2)
        #expect(try self.version(manager) == 2)

        let actions = try manager.history("echo").map(\.action)
        #expect(actions.suffix(4) == ["load", "traffic", "promote", "rollback"])
    }

    @Test("promotions, rollbacks and loads are counted through swift-metrics; refused changes are not")
    func eventsCounted() async throws {
        let metrics = TestMetrics()
        let repo = try TemporaryRepository(versions: [1, 2])
        let manager = try await repo.manager(metricsFactory: metrics)
        defer { manager.stopAll() }
        #expect(
            try metrics.expectCounter(ModelManager.loadsMetric, [("model", "echo"), ("result", "ready")]).totalValue
                == 2)
        await #expect(throws: InferWireError.self) { try await manager.promote("echo") }  // no canary
        _ = try await manager.setTraffic("echo", canary: 1, percent: 10, sticky: false)
        _ = try await manager.promote("echo")
        _ = try await manager.rollback("echo")
        // A second rollback counts only if it was applied.
        let second = (try? await manager.rollback("echo")) != nil
        func count(_ event: String) throws -> Int64 {
            try metrics.expectCounter(ModelManager.rolloutEventsMetric, [("model", "echo"), ("event", event)])
                .totalValue
        }
        #expect(try count("promote") == 1)
        #expect(try count("rollback") == (second ? 2 : 1))
        _ = try? await manager.load("echo", version: 9)  // no such directory: refused before loading
        #expect(metrics.counters(label: ModelManager.loadsMetric).count == 1)
    }

    @Test("a 10% canary gets about 10% of unlabelled requests; a sticky canary keeps each key on one version")
    func canaryShare() async throws {
        let repo = try TemporaryRepository(versions: [1, 2])
        let manager = try await repo.manager()
        defer { manager.stopAll() }
        _ = try await manager.setTraffic("echo", canary: 1, percent: 10, sticky: false)
        let draws = 4000
        let canary = try (0..<draws).filter { _ in try self.version(manager) == 1 }.count
        // Binomial(4000, 0.1): mean 400, sd ≈ 19; ±5 sd.
        #expect((305...495).contains(canary))

        _ = try await manager.setTraffic("echo", canary: 1, percent: 30, sticky: true)
        var onCanary = 0
        for key in (0..<500).map({ "user-\($0)" }) {
            let first = try self.version(manager, key: key)
            for _ in 0..<5 { #expect(try self.version(manager, key: key) == first) }
            if first == 1 { onCanary += 1 }
        }
        #expect((90...210).contains(onCanary))
    }

    @Test("rollout state survives a restart")
    func restart() async throws {
        let repo = try TemporaryRepository(versions: [1, 2, 3])
        do {
            let manager = try await repo.manager()
            _ = try await manager.setTraffic("echo", canary: 2, percent: 25, sticky: true)
            _ = try await manager.promote("echo")
            _ = try await manager.setTraffic("echo", canary: 1, percent: 5, sticky: false)
            manager.stopAll()
        }
        let restarted = try await repo.manager()
        defer { restarted.stopAll() }
        let rollout = try restarted.status("echo").rollout
        #expect(rollout.stableVersion == 2)
        #expect(rollout.previousStableVersion == 3)
        #expect(rollout.canaryVersion == 1)
        #expect(rollout.canaryPercent == 5)
        #expect(try restarted.history("echo").map(\.action).contains("promote"))
    }

    @Test("a corrupt state file is logged, kept aside, and serving falls back to the defaults")
    func corruptState() async throws {
        let repo = try TemporaryRepository(versions: [1, 2])
        try "{ not json".write(toFile: repo.statePath, atomically: true, encoding: .utf8)
        let manager = try await repo.manager()
        defer { manager.stopAll() }
        #expect(try self.version(manager) == 2)
        let kept = try FileManager.default.contentsOfDirectory(atPath: repo.root).filter {
            $0.hasPrefix(".inferwire-state.json.corrupt-")
        }
        #expect(kept.count == 1)
        #expect(try String(contentsOfFile: repo.root + "/" + kept[0], encoding: .utf8) == "{ not json")
    }

    @Test("a failed load marks the version FAILED with the reason and leaves serving untouched")
    func failedLoad() async throws {
        let repo = try TemporaryRepository(versions: [1])
        let manager = try await repo.manager()
        defer { manager.stopAll() }
        // The directory's config names a platform this repository cannot run.
        try #"platform: "tensorflow""#.write(
            toFile: "\(repo.root)/echo/config.pbtxt", atomically: true, encoding: .utf8)
        try repo.addVersion(2)
        let status = try await manager.load("echo", version: 2)
        #expect(status.state == .failed)
        #expect(status.reason.contains("platform 'tensorflow' is not available"))
        #expect(try self.version(manager) == 1)
        await #expect(throws: InferWireError.self) {
            try await manager.setTraffic("echo", canary: 2, percent: 10, sticky: false)
        }
    }

    @Test("stable and canary versions cannot be unloaded; others drain and leave routing")
    func unload() async throws {
        let repo = try TemporaryRepository(versions: [1, 2, 3])
        let manager = try await repo.manager()
        defer { manager.stopAll() }
        _ = try await manager.setTraffic("echo", canary: 2, percent: 10, sticky: false)
        await #expect(throws: InferWireError.self) { try await manager.unload("echo", version: 3) }
        await #expect(throws: InferWireError.self) { try await manager.unload("echo", version: 2) }
        let status = try await manager.unload("echo", version: 1)
        #expect(status.state == .unloaded)
        var selector = Inferwire_V1_VersionSelector()
        selector.version = 1
        #expect(throws: InferWireError.self) { try manager.registry.snapshot().resolve("echo", selector) }
    }

    @Test("traffic can only point at a version that is loaded and ready")
    func trafficNeedsReadyVersion() async throws {
        let repo = try TemporaryRepository(versions: [1])
        let manager = try await repo.manager()
        defer { manager.stopAll() }
        await #expect(throws: InferWireError.self) {
            try await manager.setTraffic("echo", canary: 7, percent: 10, sticky: false)
        }
        await #expect(throws: InferWireError.self) {
            try await manager.setTraffic("echo", canary: 1, percent: 10, sticky: false)
        }
        await #expect(throws: InferWireError.self) { try await manager.promote("echo") }
        await #expect(throws: InferWireError.self) { try await manager.rollback("echo") }
    }
}

/// `platform: "faulty_when_marked"`: an identity model, except in version directories
/// holding a file named FAULTY, where every execution throws.
struct FaultyWhenMarkedLoader: ModelLoader {
    var platform: String { "faulty_when_marked" }

    struct Broken: Error {}
    struct BrokenModel: InferenceModel {
        let signature: ModelSignature
        var isLightweight: Bool { true }
        func execute(_ inputs: [Tensor]) throws -> [Tensor] { throw Broken() }
    }

    /// The identity, 3 ms late on every call.
    struct SlowModel: InferenceModel {
        let signature: ModelSignature
        var isLightweight: Bool { true }
        func execute(_ inputs: [Tensor]) throws -> [Tensor] {
            Thread.sleep(forTimeInterval: 0.003)
            return [
                Tensor(
                    name: self.signature.outputs[0].name, dataType: inputs[0].dataType, shape: inputs[0].shape,
                    data: inputs[0].data)
            ]
        }
    }

    /// Answers 2·X: a candidate whose outputs differ from the identity's.
    struct DoublingModel: InferenceModel {
        let signature: ModelSignature
        var isLightweight: Bool { true }
        func execute(_ inputs: [Tensor]) throws -> [Tensor] {
            [
                Tensor(
                    name: self.signature.outputs[0].name, values: inputs[0].values(as: Float.self)!.map { $0 * 2 },
                    shape: inputs[0].shape)
            ]
        }
    }

    func load(configuration: ModelConfiguration, versionDirectory: String) throws -> any InferenceModel {
        var identity = configuration
        identity.platform = "identity"
        let model = try IdentityModelLoader().load(configuration: identity, versionDirectory: versionDirectory)
        if FileManager.default.fileExists(atPath: versionDirectory + "/FAULTY") {
            return BrokenModel(signature: model.signature)
        }
        if FileManager.default.fileExists(atPath: versionDirectory + "/DOUBLE") {
            return DoublingModel(signature: model.signature)
        }
        if FileManager.default.fileExists(atPath: versionDirectory + "/SLOW") {
            return SlowModel(signature: model.signature)
        }
        return model
    }
}

/// A two-version model whose version 1 (the canary under test) carries `marker`, with a
/// rollout guard; version 2 is the stable version.
final class GuardedModel {
    let root: String
    let manager: ModelManager
    let dispatcher: RequestDispatcher

    init(marker: String?, guard: String, metricsFactory: (any MetricsFactory)? = nil) async throws {
        self.root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-guard-\(UUID())").path
        for version in [1, 2] {
            try FileManager.default.createDirectory(
                atPath: "\(self.root)/m/\(version)", withIntermediateDirectories: true)
        }
        if let marker { FileManager.default.createFile(atPath: "\(self.root)/m/1/\(marker)", contents: Data()) }
        try """
        platform: "faulty_when_marked"
        version_policy { all { } }
        input { name: "X" datatype: FP32 shape: [2] }
        output { name: "Y" datatype: FP32 shape: [2] }
        rollout { guard { \(`guard`) } }
        """.write(toFile: "\(self.root)/m/config.pbtxt", atomically: true, encoding: .utf8)
        self.manager = ModelManager(
            repository: ModelRepository(directory: self.root, loaders: [FaultyWhenMarkedLoader()]),
            configuration: .init(metricsFactory: metricsFactory), logger: quiet)
        try await self.manager.start()
        self.dispatcher = RequestDispatcher(registry: self.manager.registry, manager: self.manager)
        _ = try await self.manager.setTraffic("m", canary: 1, percent: 50, sticky: false)
    }

    /// Sends `count` unlabelled requests (half reach the canary) without waiting for answers.
    func send(_ count: Int) throws {
        var request = Inferwire_V1_InferRequest()
        request.modelName = "m"
        request.inputs = [Tensor(name: "X", values: [1, 2] as [Float], shape: [2]).wire]
        let payload: [UInt8] = try request.serializedBytes()
        for _ in 0..<count { self.dispatcher.handle(method: 6, payload: payload, deadline: nil) { _ in } }
    }

    deinit {
        self.manager.stopAll()
        try? FileManager.default.removeItem(atPath: self.root)
    }
}

@Suite("Guarded rollout")
struct GuardedRolloutTests {
    @Test("a canary whose error rate breaches the guard is rolled back automatically, with the reason recorded")
    func autoRollback() async throws {
        let model = try await GuardedModel(
            marker: "FAULTY", guard: "max_error_rate_increase: 0.05 window_seconds: 30 min_requests: 20")
        try model.send(200)
        #expect(await model.manager.checkGuards() == ["m"])
        let status = try model.manager.status("m")
        #expect(status.rollout.canaryVersion == 0)
        #expect(status.rollout.stableVersion == 2)
        let last = try #require(try model.manager.history("m").last)
        #expect(last.action == "auto-rollback")
        #expect(last.actor == "guard")
        #expect(last.detail.contains("error rate"))
    }

    @Test("an automatic rollback is counted through swift-metrics as automatic_rollback")
    func autoRollbackCounted() async throws {
        let metrics = TestMetrics()
        let model = try await GuardedModel(
            marker: "FAULTY", guard: "max_error_rate_increase: 0.05 window_seconds: 30 min_requests: 20",
            metricsFactory: metrics)
        try model.send(200)
        #expect(await model.manager.checkGuards() == ["m"])
        let counter = try metrics.expectCounter(
            ModelManager.rolloutEventsMetric, [("model", "m"), ("event", "automatic_rollback")])
        #expect(counter.totalValue == 1)
        #expect(metrics.counters(label: ModelManager.rolloutEventsMetric).count == 1)
    }

    @Test("a canary whose p99 latency breaches the guard's ratio is rolled back")
    func slowCanary() async throws {
        let model = try await GuardedModel(marker: "SLOW", guard: "max_p99_ratio: 4 min_requests: 20")
        try model.send(120)
        #expect(await model.manager.checkGuards() == ["m"])
        #expect(try model.manager.history("m").last?.detail.contains("p99") == true)
    }

    @Test("a healthy canary passes the guard")
    func healthyCanary() async throws {
        let model = try await GuardedModel(marker: nil, guard: "max_error_rate_increase: 0.05 min_requests: 20")
        try model.send(200)
        #expect(await model.manager.checkGuards().isEmpty)
        #expect(try model.manager.status("m").rollout.canaryVersion == 1)
    }
}

@Suite("Shadow traffic")
struct ShadowTests {
    func setUp(marker: String?) async throws -> (ModelManager, RequestDispatcher, String) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-shadow-\(UUID())").path
        for version in [1, 2] {
            try FileManager.default.createDirectory(atPath: "\(root)/m/\(version)", withIntermediateDirectories: true)
        }
        // Version 2 is stable; version 1 is the candidate that shadows it.
        if let marker { FileManager.default.createFile(atPath: "\(root)/m/1/\(marker)", contents: Data()) }
        try """
        platform: "faulty_when_marked"
        version_policy { all { } }
        input { name: "X" datatype: FP32 shape: [2] }
        output { name: "Y" datatype: FP32 shape: [2] }
        """.write(toFile: "\(root)/m/config.pbtxt", atomically: true, encoding: .utf8)
        let manager = ModelManager(
            repository: ModelRepository(directory: root, loaders: [FaultyWhenMarkedLoader()]), logger: quiet)
        try await manager.start()
        return (manager, RequestDispatcher(registry: manager.registry, manager: manager), root)
    }

    func run(_ dispatcher: RequestDispatcher, count: Int) async throws -> [Int64] {
        var request = Inferwire_V1_InferRequest()
        request.modelName = "m"
        request.inputs = [Tensor(name: "X", values: [1, 2] as [Float], shape: [2]).wire]
        let payload: [UInt8] = try request.serializedBytes()
        var versions: [Int64] = []
        for _ in 0..<count {
            let answer = Answer()
            dispatcher.handle(method: 6, payload: payload, deadline: nil) { answer.set($0) }
            versions.append(try Inferwire_V1_InferResponse(serializedBytes: try await answer.value.get()).modelVersion)
        }
        return versions
    }

    @Test("a shadow that answers the same is compared on every mirrored request and never seen by callers")
    func identicalShadow() async throws {
        let (manager, dispatcher, root) = try await self.setUp(marker: nil)
        defer {
            manager.stopAll()
            try? FileManager.default.removeItem(atPath: root)
        }
        _ = try await manager.setShadow("m", version: 1, percent: 100)
        let versions = try await self.run(dispatcher, count: 50)
        #expect(Set(versions) == [2])
        let report = try await self.waitForComparisons(manager, 50)
        #expect(report.compared == 50)
        #expect(report.differing == 0)
        #expect(report.maxAbsDifference == 0)
    }

    @Test("a shadow whose answers differ is reported with the size of the difference")
    func differingShadow() async throws {
        let (manager, dispatcher, root) = try await self.setUp(marker: "DOUBLE")
        defer {
            manager.stopAll()
            try? FileManager.default.removeItem(atPath: root)
        }
        _ = try await manager.setShadow("m", version: 1, percent: 100)
        let versions = try await self.run(dispatcher, count: 20)
        #expect(Set(versions) == [2])
        let report = try await self.waitForComparisons(manager, 20)
        #expect(report.compared == 20)
        #expect(report.differing == 20)
        #expect(report.maxAbsDifference == 2)  // [1, 2] vs [2, 4]
        #expect(try manager.history("m").last?.action == "shadow")
    }

    @Test("shadow failures are counted and do not reach callers")
    func failingShadow() async throws {
        let (manager, dispatcher, root) = try await self.setUp(marker: "FAULTY")
        defer {
            manager.stopAll()
            try? FileManager.default.removeItem(atPath: root)
        }
        _ = try await manager.setShadow("m", version: 1, percent: 100)
        #expect(Set(try await self.run(dispatcher, count: 10)) == [2])
        let report = try await self.waitForComparisons(manager, 10)
        #expect(report.shadowFailures == 10)
    }

    func waitForComparisons(_ manager: ModelManager, _ n: UInt64) async throws -> Inferwire_V1_ShadowReport {
        for _ in 0..<500 {
            let report = try manager.status("m").shadow
            if report.compared + report.shadowFailures >= n { return report }
            try await Task.sleep(for: .milliseconds(10))
        }
        return try manager.status("m").shadow
    }
}
