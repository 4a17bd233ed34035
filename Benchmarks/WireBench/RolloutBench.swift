import ArgumentParser
import Foundation
import Histogram
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import InferWireServer
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Rollouts under load: p99 while versions swap once a second against steady state; memory
/// after loading and unloading 20 versions; time from `load` to ready.
struct RolloutBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout", abstract: "Latency during version swaps, memory across load/unload, time to ready.")

    @Option(help: "Model repository holding the fraud, mlp and forest examples.")
    var repository = "examples/models"

    @Option(help: "Seconds per phase (steady, then swapping).")
    var seconds = 8

    @Option(help: "Concurrent clients generating load.")
    var clients = 4

    final class Recorder: Sendable {
        let histogram = Mutex(
            Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three))
        let failures = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
    }

    func run() async throws {
        let logger = benchLogger
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-rollout-bench-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        for name in ["fraud", "mlp", "forest"] {
            try FileManager.default.copyItem(atPath: "\(self.repository)/\(name)", toPath: "\(root)/\(name)")
        }
        let manager = ModelManager(
            repository: ModelRepository(directory: root, loaders: [OnnxModelLoader()]), logger: logger)
        try await manager.start()
        let dispatcher = RequestDispatcher(registry: manager.registry, manager: manager)
        // The manager's owned work runs the management calls the admin client makes.
        try await withInProcessServer(dispatcher: dispatcher, services: [ModelManagerService(manager: manager)]) {
            port in
            try await self.measure(port: port, manager: manager, root: root)
        }
    }

    func phase(port: Int, swapping: Bool) async throws -> (
        p50: Double, p99: Double, requests: UInt64, failures: Int, swaps: Int
    ) {
        let recorder = Recorder()
        let x = Tensor(name: "X", values: [250, -1.2, 0.3, 0.8, 0.1, -0.4, 1.1, 0] as [Float], shape: [1, 8])
        var swaps = 0
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<self.clients {
                group.addTask {
                    let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
                    while !recorder.stop.load(ordering: .relaxed) {
                        let start = ContinuousClock.now
                        do {
                            _ = try await client.infer(model: "fraud", inputs: [x])
                            let elapsed = ContinuousClock.now - start
                            let nanos = UInt64(max(0, elapsed.inNanoseconds))
                            recorder.histogram.withLock { _ = $0.record(nanos) }
                        } catch {
                            recorder.failures.add(1, ordering: .relaxed)
                        }
                    }
                    await client.close()
                }
            }
            let admin = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            defer { recorder.stop.store(true, ordering: .relaxed) }
            for _ in 0..<self.seconds {
                try await Task.sleep(for: .seconds(1))
                if swapping {
                    // One swap a second: alternately promote version 1 via a canary, and roll back.
                    if swaps % 2 == 0 {
                        _ = try await admin.setTraffic("fraud", canary: 1, percent: 10)
                        _ = try await admin.promote("fraud")
                    } else {
                        _ = try await admin.rollback("fraud")
                    }
                    swaps += 1
                }
            }
            recorder.stop.store(true, ordering: .relaxed)
            await admin.close()
            try await group.waitForAll()
        }
        return recorder.histogram.withLock {
            (
                Double($0.valueAtPercentile(50)) / 1000, Double($0.valueAtPercentile(99)) / 1000, $0.totalCount,
                recorder.failures.load(ordering: .relaxed), swaps
            )
        }
    }

    static func residentMiB() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let pages = text.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0
        return pages * 4096 / 1_048_576
    }

    func measure(port: Int, manager: ModelManager, root: String) async throws {
        print("Rollouts under load: \(self.clients) clients on the fraud example, \(self.seconds) s per phase\n")
        let steady = try await self.phase(port: port, swapping: false)
        let swapping = try await self.phase(port: port, swapping: true)
        print("phase        requests   failed   p50 µs    p99 µs")
        print(
            String(
                format: "steady       %8llu   %6d   %6.1f   %7.1f", steady.requests, steady.failures, steady.p50,
                steady.p99))
        print(
            String(
                format: "1 swap/s     %8llu   %6d   %6.1f   %7.1f   (%d swaps)", swapping.requests, swapping.failures,
                swapping.p50, swapping.p99, swapping.swaps))
        print(String(format: "p99 swapping / steady: %.2f×\n", swapping.p99 / steady.p99))

        // Time from load to ready, for each example model (a fresh version directory).
        for name in ["fraud", "mlp", "forest"] {
            let versions = try manager.repository.versions(model: name)
            let next = (versions.max() ?? 0) + 100
            try FileManager.default.copyItem(
                atPath: "\(root)/\(name)/\(versions.max()!)", toPath: "\(root)/\(name)/\(next)")
            let start = ContinuousClock.now
            let status = try await manager.load(name, version: next)
            let elapsed = ContinuousClock.now - start
            print(
                String(
                    format: "load → ready  %-7@ %8.2f ms  (%@)", name, elapsed.inSeconds * 1000,
                    status.state == .ready ? "READY" : "FAILED"))
            _ = try await manager.unload(name, version: next)
        }

        // Memory across 20 loads and unloads of the mlp model.
        let before = Self.residentMiB()
        let source = "\(root)/mlp/\(try manager.repository.versions(model: "mlp").min()!)"
        for i in 0..<20 {
            let version = Int64(1000 + i)
            try? FileManager.default.removeItem(atPath: "\(root)/mlp/\(version)")
            try FileManager.default.copyItem(atPath: source, toPath: "\(root)/mlp/\(version)")
            _ = try await manager.load("mlp", version: version)
            _ = try await manager.unload("mlp", version: version)
        }
        let after = Self.residentMiB()
        print(
            String(
                format: "\nresident memory: %.1f MiB before 20 load/unload cycles of mlp, %.1f MiB after (%+.1f%%)",
                before, after, (after - before) / before * 100))
    }
}
