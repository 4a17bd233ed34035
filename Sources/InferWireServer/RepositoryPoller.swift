public import InferWireCore
import ServiceLifecycle

/// Re-scans the model repository every `interval` (poll mode), loading versions that
/// appeared; stops on graceful shutdown.
public struct RepositoryPoller: Service {
    public let manager: ModelManager
    public let interval: Duration

    public init(manager: ModelManager, interval: Duration) {
        self.manager = manager
        self.interval = interval
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            if Task.isShuttingDownGracefully || Task.isCancelled { return }
            await self.manager.poll()
        }
    }
}
