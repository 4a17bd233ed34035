import ArgumentParser
import CoreMetrics
import Foundation
import InferWireAuth
import InferWireCore
import InferWireEngine
import InferWireEtcd
import InferWireONNX
import InferWireProto
import InferWireServer
import Logging
import NIOPosix
import Prometheus
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
            "Seconds without requests after which a connection is sent GOAWAY and closed (clients reconnect); 0 keeps idle connections."
    )
    var idleTimeout = 300.0

    @Option(help: "Seconds a connection may stop sending in the middle of a frame before it is closed.")
    var frameStallTimeout = 30.0

    @Option(help: "I/O threads (default: one per core).")
    var threads: Int?

    @Option(help: "Seconds to let in-flight requests finish after SIGTERM before closing connections.")
    var shutdownTimeout = 30

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Option(help: "Log line format: text, or json (one JSON object per line: time, level, label, message, metadata).")
    var logFormat = "text"

    @Option(
        help:
            "Access log: the share of infer requests logged when answered (0 to 1; 0, the default, logs none), with model, code, duration, peer, principal and trace id."
    )
    var accessLogRate = 0.0

    @Option(
        help:
            "Prediction log: write a sample of requests and answers to <dir>/<model>/<version>/predictions-<n>.jsonl, and keep per-feature statistics of each version."
    )
    var predictionLog: String?

    @Option(help: "The share of infer requests the prediction log records (0 to 1).")
    var predictionLogRate = 0.01

    @Option(help: "Prediction log: a file is closed and the next begun at this many MiB.")
    var predictionLogFileMib = 64

    @Option(help: "Prediction log: files kept per model version; the oldest are deleted.")
    var predictionLogFiles = 8

    @Flag(help: "Switch off the management service (load, unload, traffic, promote, rollback).")
    var noManagement = false

    @Option(help: "explicit: versions change only through the management service; poll: also re-scan the repository.")
    var mode = "explicit"

    @Option(help: "Seconds between repository scans in poll mode.")
    var pollInterval = 5

    @Option(
        help:
            "Where rollout state lives: a file (default <repository>/.inferwire-state.json), or etcd://HOST:PORT/PREFIX to share it with every replica using the same etcd and prefix."
    )
    var state: String?

    @Flag(
        help:
            "With --state etcd://…: when etcd cannot be reached at start, start from the repository's defaults (and reconcile when it answers) instead of waiting for it."
    )
    var stateFallback = false

    @Option(help: "This replica's name in the shared state (reports, guard lead); default: the host name.")
    var replicaName: String?

    @Option(help: "TLS: the server's certificate chain (PEM). With --tls-key, every listener speaks TLS only.")
    var tlsCert: String?

    @Option(help: "TLS: the server's private key (PEM).")
    var tlsKey: String?

    @Option(help: "Mutual TLS: clients must present a certificate issued by this CA (PEM).")
    var tlsClientCa: String?

    @Option(
        help:
            "Require authentication; tokens (SHA-256 digests) and certificate common names with their roles, one per line (README: Security)."
    )
    var tokenFile: String?

    @Option(help: "Require authentication; accept JWTs signed by a key in this JWKS file (HS256, RS256, ES256).")
    var jwtKeys: String?

    @Option(help: "The issuer (iss) every accepted JWT must name.")
    var jwtIssuer: String?

    @Option(help: "A value the audience (aud) of every accepted JWT must include.")
    var jwtAudience: String?

    @Option(help: "Serve management methods on this port only (its own listener), not on --port.")
    var managementPort: Int?

    @Option(help: "Address the management listener binds.")
    var managementHost = "127.0.0.1"

    @Flag(
        help:
            "Serve management on a non-loopback address without authentication (anyone reaching it can unload models)."
    )
    var insecure = false

    @Option(help: "Address the HTTP listener (metrics, health probes) binds.")
    var httpHost = "127.0.0.1"

    @Option(help: "Port of the HTTP listener: GET /metrics, /health/live, /health/ready (and /v2/health/…).")
    var httpPort = 8502

    @Flag(help: "No HTTP listener.")
    var noHttp = false

    @Flag(
        help:
            "Keep no metrics: requests are not timed end to end, connections count no bytes, and /metrics answers 404. Health probes and MODEL_STATISTICS stay."
    )
    var noMetrics = false

    func validate() throws {
        guard ["text", "json"].contains(self.logFormat) else {
            throw ValidationError("--log-format must be text or json")
        }
        guard (0...1).contains(self.accessLogRate) else {
            throw ValidationError("--access-log-rate must be between 0 and 1")
        }
        guard self.predictionLogRate > 0 && self.predictionLogRate <= 1 else {
            throw ValidationError("--prediction-log-rate must be above 0 and at most 1")
        }
        guard self.predictionLogFileMib >= 1, self.predictionLogFiles >= 1 else {
            throw ValidationError("--prediction-log-file-mib and --prediction-log-files must be at least 1")
        }
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
        guard self.frameStallTimeout.isFinite, (0.01...3600).contains(self.frameStallTimeout) else {
            throw ValidationError("--frame-stall-timeout must be between 0.01 and 3600 seconds")
        }
        guard self.shutdownTimeout >= 0 else { throw ValidationError("--shutdown-timeout must not be negative") }
        guard ["explicit", "poll"].contains(self.mode) else { throw ValidationError("--mode must be explicit or poll") }
        guard self.pollInterval >= 1 else { throw ValidationError("--poll-interval must be at least 1") }
        if let state = self.state, state.hasPrefix("etcd:") {
            do throws(EtcdError) {
                _ = try EtcdFleetStore.Configuration(url: state)
            } catch {
                throw ValidationError("--state: \(error.message)")
            }
        } else if self.stateFallback {
            throw ValidationError("--state-fallback needs --state etcd://HOST:PORT/PREFIX")
        }
        if let name = self.replicaName {
            guard !name.isEmpty, name.count <= 253, !name.contains("/") else {
                throw ValidationError("--replica-name must be 1 to 253 characters without '/'")
            }
        }
        guard (self.tlsCert == nil) == (self.tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        guard self.tlsClientCa == nil || self.tlsCert != nil else {
            throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key")
        }
        guard self.jwtKeys != nil || (self.jwtIssuer == nil && self.jwtAudience == nil) else {
            throw ValidationError("--jwt-issuer and --jwt-audience need --jwt-keys")
        }
        guard (0...65535).contains(self.httpPort) else {
            throw ValidationError("--http-port must be between 0 and 65535")
        }
        if let port = self.managementPort {
            guard (0...65535).contains(port) else {
                throw ValidationError("--management-port must be between 0 and 65535")
            }
            guard !self.noManagement else { throw ValidationError("--management-port and --no-management conflict") }
        }
        if let exposure = self.unauthenticatedManagementExposure, !self.insecure {
            throw ValidationError(
                """
                refusing to serve management on \(exposure) without authentication: anyone who reaches it could \
                unload models or promote versions. Configure --token-file or --jwt-keys, serve management on a \
                loopback --management-port, switch it off with --no-management, or pass --insecure to accept the risk.
                """)
        }
    }

    /// The non-loopback address management would be served on without authentication, if any.
    var unauthenticatedManagementExposure: String? {
        guard !self.noManagement, self.tokenFile == nil, self.jwtKeys == nil else { return nil }
        let host = self.managementPort == nil ? self.host : self.managementHost
        return Self.isLoopback(host) ? nil : host
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    func run() async throws {
        let level = Logger.Level(rawValue: self.logLevel) ?? .info
        let json = self.logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json {
                var handler = JSONLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "inferwire")
        // Events (rollout changes, model loads, rejected connections, HTTP requests) go through
        // swift-metrics into this registry, which /metrics emits with what it collects.
        let events = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: events))

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
        var managerConfiguration = ModelManager.Configuration(
            statePath: self.state ?? self.repository + "/.inferwire-state.json")
        var etcd: EtcdFleetStore?
        if let state = self.state, state.hasPrefix("etcd:") {
            let store = EtcdFleetStore(configuration: try EtcdFleetStore.Configuration(url: state))
            let replica = self.replicaName ?? ProcessInfo.processInfo.hostName
            managerConfiguration.fleet = .init(store: store, replica: replica, startWithoutStore: self.stateFallback)
            logger.info("rollout state shared in \(store.location) as replica '\(replica)'")
            etcd = store
        }
        let manager = ModelManager(repository: repository, configuration: managerConfiguration, logger: logger)
        do {
            try await manager.start()
            try await self.serve(manager: manager, runtime: runtime, events: events, logger: logger)
        } catch {
            try? await etcd?.shutdown()
            throw error
        }
        try? await etcd?.shutdown()
    }

    private func serve(
        manager: ModelManager, runtime: [String: String], events: PrometheusCollectorRegistry, logger: Logger
    ) async throws {
        if manager.list().allSatisfy({ $0.versions.allSatisfy { $0.state != .ready } }) {
            logger.warning("no model loaded from \(self.repository)")
        }
        let predictionLog = try self.predictionLog.map { directory throws(InferWireError) in
            try PredictionLog(
                configuration: .init(
                    directory: directory, sampleRate: self.predictionLogRate,
                    maxFileBytes: self.predictionLogFileMib << 20, maxFiles: self.predictionLogFiles))
        }
        if let predictionLog {
            logger.info(
                "prediction log: one request in \(predictionLog.sample.interval) to \(predictionLog.configuration.directory)"
            )
        }
        let dispatcher = RequestDispatcher(
            registry: manager.registry, manager: self.noManagement ? nil : manager, info: ServerInfo(runtime: runtime),
            timesRequests: !self.noMetrics, accessLogSampleRate: self.accessLogRate, predictionLog: predictionLog)
        let group: MultiThreadedEventLoopGroup =
            self.threads.map { MultiThreadedEventLoopGroup(numberOfThreads: $0) } ?? .singleton
        var authenticator: Authenticator?
        if self.tokenFile != nil || self.jwtKeys != nil {
            authenticator = try await Authenticator(
                configuration: .init(
                    tokenFile: self.tokenFile, jwks: self.jwtKeys,
                    jwtExpectations: .init(issuer: self.jwtIssuer, audience: self.jwtAudience)))
            let sources = [
                self.tokenFile.map { "token file \($0)" }, self.jwtKeys.map { "JWTs signed by keys in \($0)" },
            ]
            logger.info("authentication required: \(sources.compactMap { $0 }.joined(separator: ", "))")
        } else if let exposure = self.unauthenticatedManagementExposure {
            logger.warning("management is served on \(exposure) without authentication (--insecure)")
        }
        let tls = self.tlsCert.map {
            InferWireServer.Configuration.TLS(
                certificateChainPath: $0, privateKeyPath: self.tlsKey ?? "", clientCAPath: self.tlsClientCa)
        }
        let limits = InferWireServer.Configuration.Limits(
            maxFrameSize: self.maxFrameSize, maxConcurrentRequests: self.maxConcurrentRequests,
            maxConnections: self.maxConnections, maxConnectionsPerAddress: self.maxConnectionsPerAddress,
            handshakeTimeout: .milliseconds(Int64(self.handshakeTimeout * 1000)),
            idleTimeout: self.idleTimeout == 0 ? nil : .milliseconds(Int64(self.idleTimeout * 1000)),
            frameStallTimeout: .milliseconds(Int64(self.frameStallTimeout * 1000)))
        let server = try InferWireServer(
            configuration: .init(
                host: self.host, port: self.port, limits: limits, tls: tls,
                services: self.managementPort == nil ? .all : .inference, countsTraffic: !self.noMetrics,
                logsAccess: self.accessLogRate > 0),
            dispatcher: dispatcher,
            logger: logger,
            authenticator: authenticator,
            eventLoopGroup: group)
        var servers = [server]
        if let managementPort = self.managementPort {
            var managementLogger = logger
            managementLogger[metadataKey: "listener"] = "management"
            servers.append(
                try InferWireServer(
                    configuration: .init(
                        host: self.managementHost, port: managementPort, limits: limits, tls: tls,
                        services: .management, countsTraffic: !self.noMetrics),
                    dispatcher: dispatcher, logger: managementLogger, authenticator: authenticator,
                    eventLoopGroup: group))
        }

        // The manager's owned work: management operations, grace-period unloads, polls in
        // poll mode, and guard checks that roll back canaries doing worse than stable.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(
                service: ModelManagerService(
                    manager: manager, pollInterval: self.mode == "poll" ? .seconds(self.pollInterval) : nil,
                    guardInterval: .seconds(1)))
        ]
        if !self.noHttp {
            let exporter = MetricsExporter(
                dispatcher: dispatcher, manager: self.noManagement ? nil : manager,
                listeners: [("inference", server)] + (servers.count > 1 ? [("management", servers[1])] : []),
                events: events)
            let metrics: (@Sendable () -> String)? = self.noMetrics ? nil : { @Sendable in exporter.exposition() }
            services.append(
                .init(
                    service: HTTPEndpointServer(
                        configuration: .init(host: self.httpHost, port: self.httpPort),
                        sources: .init(
                            readiness: {
                                var problems = dispatcher.readinessProblems
                                for status in manager.list() {
                                    for version in status.versions where version.state == .loading {
                                        problems.append("model '\(status.name)' version \(version.version) is loading")
                                    }
                                }
                                if !server.isListening {
                                    problems.append("the inference listener is not listening yet")
                                }
                                return Readiness(
                                    problems: problems, degraded: manager.sharedStateProblem.map { [$0] } ?? [])
                            },
                            metrics: metrics),
                        logger: logger, eventLoopGroup: group)))
        }
        if tls != nil || authenticator != nil {
            services.append(
                .init(service: CredentialReloader(servers: servers, authenticator: authenticator, logger: logger)))
        }
        if let predictionLog { services.append(.init(service: PredictionLogService(log: predictionLog))) }
        // The servers last, so that they stop first on shutdown.
        services.append(contentsOf: servers.map { .init(service: $0) })
        var groupConfiguration = ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(self.shutdownTimeout)
        try await ServiceGroup(configuration: groupConfiguration).run()
        dispatcher.stopExecution()
    }
}

/// Rereads the TLS files and the credentials (token file, JWKS) on SIGHUP. Files that fail
/// to load are logged and the previous ones stay in use.
struct CredentialReloader: Service {
    let servers: [InferWireServer]
    let authenticator: Authenticator?
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        self.logger.info("SIGHUP rereads the TLS files and credentials")
        for await _ in signals.cancelOnGracefulShutdown() {
            var failures: [String] = []
            do throws(InferWireError) {
                for server in self.servers { try server.reloadTLS() }
            } catch {
                failures.append(error.message)
            }
            do throws(InferWireError) {
                try await self.authenticator?.reload()
            } catch {
                failures.append(error.message)
            }
            if failures.isEmpty {
                self.logger.notice("SIGHUP: reloaded the TLS certificate and credentials")
            } else {
                self.logger.error("SIGHUP: kept the previous files: \(failures.joined(separator: "; "))")
            }
        }
    }
}

/// Closes the prediction log once the servers have stopped: what is buffered is written.
struct PredictionLogService: Service {
    let log: PredictionLog

    func run() async throws {
        try? await gracefulShutdown()
        // Closing writes files: off the concurrency pool.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                self.log.close()
                continuation.resume()
            }
        }
    }
}
