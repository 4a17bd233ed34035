import ServiceLifecycle

/// Runs `action` every `interval` until graceful shutdown. (The model manager's polling
/// and guard checks run in `ModelManagerService` instead.)
public struct PeriodicService: Service {
    public let interval: Duration
    public let action: @Sendable () async -> Void

    public init(every interval: Duration, _ action: @escaping @Sendable () async -> Void) {
        self.interval = interval
        self.action = action
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            if Task.isShuttingDownGracefully || Task.isCancelled { return }
            await self.action()
        }
    }
}
