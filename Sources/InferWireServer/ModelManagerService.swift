public import InferWireEngine
public import ServiceLifecycle

/// Runs a ``ModelManager``'s owned work in the server's `ServiceGroup`: management
/// operations handed over by the management service, grace-period unloads, repository
/// polls and canary guard checks. Graceful shutdown cancels its timers, answers queued
/// operations UNAVAILABLE and waits for work under way (a load in progress finishes).
///
/// List it before the server, so that the server stops first.
public struct ModelManagerService: Service {
    public let manager: ModelManager
    /// Time between repository scans; nil: no polling.
    public var pollInterval: Duration?
    /// Time between canary guard checks; nil: no guard checks.
    public var guardInterval: Duration?

    public init(manager: ModelManager, pollInterval: Duration? = nil, guardInterval: Duration? = .seconds(1)) {
        self.manager = manager
        self.pollInterval = pollInterval
        self.guardInterval = guardInterval
    }

    public func run() async throws {
        let (manager, poll, check) = (self.manager, self.pollInterval, self.guardInterval)
        await cancelWhenGracefulShutdown {
            await manager.run(pollInterval: poll, guardInterval: check)
        }
        // Not cancelled by graceful shutdown: the other replicas stop counting this one now.
        await manager.leaveFleet()
    }
}
