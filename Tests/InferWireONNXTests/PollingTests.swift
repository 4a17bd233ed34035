import Foundation
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import Logging
import Testing

let silent = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

@Suite("Repository polling")
struct PollingTests {
    func makeRepository(role: String, grace: Int = 0) throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-poll-\(UUID())").path
        try FileManager.default.createDirectory(atPath: root + "/fraud/1", withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: "\(fixtures)/scaler_logistic_pipeline/model.onnx", toPath: root + "/fraud/1/model.onnx")
        try """
        platform: "onnx"
        max_batch_size: 8
        version_policy { all { } }
        rollout { new_version_role: \(role) canary_percent: 25 rollback_grace_seconds: \(grace) }
        """.write(toFile: root + "/fraud/config.pbtxt", atomically: true, encoding: .utf8)
        return root
    }

    func manager(_ root: String, clock: any Clock<Duration> = ContinuousClock()) async throws -> ModelManager {
        let manager = ModelManager(
            repository: ModelRepository(directory: root, loaders: [OnnxModelLoader()]),
            configuration: .init(statePath: root + "/.inferwire-state.json", clock: clock), logger: silent)
        try await manager.start()
        return manager
    }

    @Test("a half-copied version is never served and is retried; once complete it becomes the canary")
    func halfCopied() async throws {
        let root = try self.makeRepository(role: "CANARY")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let manager = try await self.manager(root)
        defer { manager.stopAll() }
        let full = try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/scaler_logistic_pipeline_v2/model.onnx"))
        try FileManager.default.createDirectory(atPath: root + "/fraud/2", withIntermediateDirectories: true)
        try full.prefix(full.count / 3).write(to: URL(fileURLWithPath: root + "/fraud/2/model.onnx"))

        await manager.poll()
        var status = try manager.status("fraud")
        #expect(status.versions.first { $0.version == 2 }?.state == .failed)
        #expect(status.rollout.stableVersion == 1)
        #expect(status.rollout.canaryVersion == 0)

        try full.write(to: URL(fileURLWithPath: root + "/fraud/2/model.onnx"))
        await manager.poll()
        status = try manager.status("fraud")
        #expect(status.versions.first { $0.version == 2 }?.state == .ready)
        #expect(status.rollout.stableVersion == 1)
        #expect(status.rollout.canaryVersion == 2)
        #expect(status.rollout.canaryPercent == 25)
        #expect(try manager.history("fraud").contains { $0.actor == "poller" && $0.action == "failed-load" })
    }

    @Test("a version found with role STABLE is promoted, and the old stable is unloaded after the grace period")
    func promotedWithGrace() async throws {
        let root = try self.makeRepository(role: "STABLE", grace: 1)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let clock = ManualClock()
        let manager = try await self.manager(root, clock: clock)
        defer { manager.stopAll() }
        try FileManager.default.createDirectory(atPath: root + "/fraud/2", withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: "\(fixtures)/scaler_logistic_pipeline_v2/model.onnx", toPath: root + "/fraud/2/model.onnx")
        // The manager's owned work runs the grace timer; time moves only when the test says.
        try await manager.whileRunning {
            await manager.poll()
            let rollout = try manager.status("fraud").rollout
            #expect(rollout.stableVersion == 2)
            #expect(rollout.previousStableVersion == 1)
            // Rollback is instant while the old version is still loaded.
            #expect(try await manager.rollback("fraud").stableVersion == 1)
            #expect(try await manager.rollback("fraud").stableVersion == 2)
            // Back to stable 2 with 1 as the previous version: the grace period (1 s) from the
            // promotion ends, and version 1 is unloaded.
            await clock.waitForSleepers(1)
            clock.advance(by: .milliseconds(999))
            #expect(try manager.status("fraud").versions.first { $0.version == 1 }?.state == .ready)
            clock.advance(by: .milliseconds(1))
            await manager.waitUntilIdle()
            #expect(try manager.status("fraud").versions.first { $0.version == 1 }?.state == .unloaded)
            #expect(try manager.status("fraud").rollout.previousStableVersion == 0)
            #expect(try manager.history("fraud").contains { $0.actor == "grace-period" })
        }
    }
}
