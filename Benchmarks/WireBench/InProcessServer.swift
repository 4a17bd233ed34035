import InferWireAuth
import InferWireCore
import InferWireEngine
import InferWireServer
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Benchmarks log nothing: output is the measurements.
let benchLogger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })

/// Runs a server for `dispatcher` on a free loopback port while `body` measures it, then
/// shuts it down gracefully and stops the model instances.
/// - Parameters:
///   - ioThreads: event loops for the server; nil uses the shared group.
///   - services: run in the same service group, started before the server and stopped after it.
func withInProcessServer(
    dispatcher: RequestDispatcher, ioThreads: Int? = nil, limits: InferWireServer.Configuration.Limits = .defaults,
    tls: InferWireServer.Configuration.TLS? = nil, authenticator: Authenticator? = nil,
    services: [any Service] = [], countsTraffic: Bool = true, onServer: (InferWireServer) -> Void = { _ in },
    _ body: (_ port: Int) async throws -> Void
) async throws {
    let logger = benchLogger
    let group: MultiThreadedEventLoopGroup =
        ioThreads.map { MultiThreadedEventLoopGroup(numberOfThreads: $0) } ?? .singleton
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let server = try InferWireServer(
        configuration: .init(host: "127.0.0.1", port: 0, limits: limits, tls: tls, countsTraffic: countsTraffic),
        dispatcher: dispatcher, logger: logger, authenticator: authenticator, eventLoopGroup: group,
        onListening: { continuation.yield($0.port!) })
    onServer(server)
    let services = ServiceGroup(configuration: .init(services: services + [server], logger: logger))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await services.run() }
        var iterator = ports.makeAsyncIterator()
        if let port = await iterator.next() {
            do {
                try await body(port)
            } catch {
                await services.triggerGracefulShutdown()
                throw error
            }
        }
        await services.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
    dispatcher.stopExecution()
    if ioThreads != nil { try await group.shutdownGracefully() }
}
