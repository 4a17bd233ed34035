import ArgumentParser
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import InferWireServer
import Logging
import NIOPosix
import ServiceLifecycle
import UnixSignals

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the models in a repository until SIGTERM or SIGINT.")

    @Option(help: "Model repository: <dir>/<model>/config.pbtxt and <dir>/<model>/<version>/.")
    var repository: String

    @Option(help: "Address to bind.")
    var host = "127.0.0.1"

    @Option(help: "Port to bind; 0 picks a free one (the 'listening on' line says which).")
    var port = 8500

    @Option(help: "Largest frame payload accepted, in bytes.")
    var maxFrameSize = InferWireServer.Configuration.Limits.defaults.maxFrameSize

    @Option(help: "Requests one connection may have in flight.")
    var maxConcurrentRequests = InferWireServer.Configuration.Limits.defaults.maxConcurrentRequests

    @Option(help: "Connections served at once; more are sent GOAWAY and closed.")
    var maxConnections = InferWireServer.Configuration.Limits.defaults.maxConnections

    @Option(help: "Connections served at once from one client address.")
    var maxConnectionsPerAddress = InferWireServer.Configuration.Limits.defaults.maxConnectionsPerAddress

    @Option(help: "Seconds a new connection has to send its preface before it is closed.")
    var handshakeTimeout = 10.0

    @Option(
        help:
            "Seconds without requests after which a connection is sent GOAWAY and closed; 0 (the default) keeps idle connections."
    )
    var idleTimeout = 0.0

    @Option(help: "I/O threads (default: one per core).")
    var threads: Int?

    @Option(help: "Seconds to let in-flight requests finish after SIGTERM before closing connections.")
    var shutdownTimeout = 30

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Flag(help: "Switch off the management service (load, unload, traffic, promote, rollback).")
    var noManagement = false

    @Option(help: "explicit: versions change only through the management service; poll: also re-scan the repository.")
    var mode = "explicit"

    @Option(help: "Seconds between repository scans in poll mode.")
    var pollInterval = 5

    func validate() throws {
        guard (1024...Int(UInt32.max)).contains(self.maxFrameSize) else {
            throw ValidationError("--max-frame-size must be between 1024 and \(UInt32.max)")
        }
        guard (1...Int(UInt32.max)).contains(self.maxConcurrentRequests) else {
            throw ValidationError("--max-concurrent-requests must be between 1 and \(UInt32.max)")
        }
        guard (0...65535).contains(self.port) else { throw ValidationError("--port must be between 0 and 65535") }
        if let threads = self.threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        guard self.maxConnections >= 1, self.maxConnectionsPerAddress >= 1 else {
            throw ValidationError("--max-connections and --max-connections-per-address must be at least 1")
        }
        guard self.handshakeTimeout.isFinite, (0.001...3600).contains(self.handshakeTimeout) else {
            throw ValidationError("--handshake-timeout must be between 0.001 and 3600 seconds")
        }
        guard self.idleTimeout.isFinite, self.idleTimeout == 0 || (0.01...86_400).contains(self.idleTimeout) else {
            throw ValidationError("--idle-timeout must be 0 (off) or between 0.01 and 86400 seconds")
        }
        guard self.shutdownTimeout >= 0 else { throw ValidationError("--shutdown-timeout must not be negative") }
        guard ["explicit", "poll"].contains(self.mode) else { throw ValidationError("--mode must be explicit or poll") }
        guard self.pollInterval >= 1 else { throw ValidationError("--poll-interval must be at least 1") }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: self.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "inferwire")

        // Before any model loads: the BLAS library is chosen and loaded once per process.
        var runtime: [String: String] = [:]
        do {
            let blas = try BLAS.load()
            runtime = blas.facts
            logger.info("GEMM by \(blas.library), kernel \(blas.kernel) (\(blas.choice))")
        } catch {
            logger.warning("\(error.message); ONNX models cannot load")
        }
        let repository = ModelRepository(
            directory: self.repository, loaders: ModelRepository.builtinLoaders + [OnnxModelLoader()])
        let manager = ModelManager(
            repository: repository,
            configuration: .init(statePath: self.repository + "/.inferwire-state.json"),
            logger: logger)
        try await manager.start()
        if manager.list().allSatisfy({ $0.versions.allSatisfy { $0.state != .ready } }) {
            logger.warning("no model loaded from \(self.repository)")
        }
        let dispatcher = RequestDispatcher(
            registry: manager.registry, manager: self.noManagement ? nil : manager, info: ServerInfo(runtime: runtime))
        let group: MultiThreadedEventLoopGroup =
            self.threads.map { MultiThreadedEventLoopGroup(numberOfThreads: $0) } ?? .singleton
        let server = InferWireServer(
            configuration: .init(
                host: self.host, port: self.port,
                limits: .init(
                    maxFrameSize: self.maxFrameSize, maxConcurrentRequests: self.maxConcurrentRequests,
                    maxConnections: self.maxConnections, maxConnectionsPerAddress: self.maxConnectionsPerAddress,
                    handshakeTimeout: .milliseconds(Int64(self.handshakeTimeout * 1000)),
                    idleTimeout: self.idleTimeout == 0 ? nil : .milliseconds(Int64(self.idleTimeout * 1000)))),
            dispatcher: dispatcher,
            logger: logger,
            eventLoopGroup: group)

        // The manager's owned work: management operations, grace-period unloads, polls in
        // poll mode, and guard checks that roll back canaries doing worse than stable.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(
                service: ModelManagerService(
                    manager: manager, pollInterval: self.mode == "poll" ? .seconds(self.pollInterval) : nil,
                    guardInterval: .seconds(1)))
        ]
        // The server last, so that it stops first on shutdown.
        services.append(.init(service: server))
        var groupConfiguration = ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(self.shutdownTimeout)
        try await ServiceGroup(configuration: groupConfiguration).run()
        dispatcher.stopExecution()
    }
}
