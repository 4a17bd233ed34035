public import InferWireCore
import ServiceLifecycle

/// Checks guarded canaries once a second and rolls back any that breach their thresholds.
public struct RolloutGuardService: Service {
    public let manager: ModelManager
    public let interval: Duration

    public init(manager: ModelManager, interval: Duration = .seconds(1)) {
        self.manager = manager
        self.interval = interval
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            if Task.isShuttingDownGracefully || Task.isCancelled { return }
            self.manager.checkGuards()
        }
    }
}
