public import CoreMetrics
public import InferWireAuth
import InferWireCore
public import InferWireEngine
import InferWireProto
import InferWireWire
public import Logging
public import NIOCore
import NIOPosix
import NIOSSL
public import ServiceLifecycle
import Synchronization

/// The InferWire TCP server: a `Service` that listens, serves connections, and on
/// graceful shutdown stops accepting, sends GOAWAY on every connection, lets
/// in-flight requests finish, and returns.
public final class InferWireServer: Service, Sendable {
    /// How the server listens and what it allows.
    public struct Configuration: Sendable {
        /// Address to bind. Tests and the default bind loopback only.
        public var host: String
        /// Port to bind; 0 picks a free one (see `onListening`).
        public var port: Int
        /// Per-connection limits, advertised to clients in HELLO.
        public var limits: Limits

        /// What connections may ask of the server.
        public struct Limits: Sendable {
            /// Largest frame payload accepted, in bytes (also the cap on an inflated payload).
            public var maxFrameSize: Int
            /// Requests one connection may have in flight; more are answered RESOURCE_EXHAUSTED.
            public var maxConcurrentRequests: Int
            /// Connections served at once; a connection beyond is sent GOAWAY and closed.
            public var maxConnections: Int
            /// Connections served at once from one client address.
            public var maxConnectionsPerAddress: Int
            /// How long a new connection has to send its preface; then it is closed.
            public var handshakeTimeout: Duration
            /// A connection with no request started or in flight for this long (to half as
            /// long again: idleness is checked twice per period) is sent GOAWAY and closed;
            /// nil keeps idle connections open. InferWire's clients open a new connection for
            /// their next call (PROTOCOL.md section 5).
            public var idleTimeout: Duration?
            /// A connection that stops sending in the middle of a frame for this long is sent
            /// GOAWAY and closed: a stalled frame holds its buffered bytes and the connection's
            /// place. Progress (any byte) restarts the wait.
            public var frameStallTimeout: Duration

            public init(
                maxFrameSize: Int = 64 << 20, maxConcurrentRequests: Int = 1024, maxConnections: Int = 16_384,
                maxConnectionsPerAddress: Int = 4096, handshakeTimeout: Duration = .seconds(10),
                idleTimeout: Duration? = .seconds(300), frameStallTimeout: Duration = .seconds(30)
            ) {
                self.maxFrameSize = maxFrameSize
                self.maxConcurrentRequests = maxConcurrentRequests
                self.maxConnections = maxConnections
                self.maxConnectionsPerAddress = maxConnectionsPerAddress
                self.handshakeTimeout = handshakeTimeout
                self.idleTimeout = idleTimeout
                self.frameStallTimeout = frameStallTimeout
            }

            /// 64 MiB frames, 1024 requests in flight per connection, 16,384 connections (4,096
            /// per client address), 10 s to send the preface, 300 s idle, 30 s for a stalled frame.
            public static var defaults: Limits { Limits() }
        }

        /// TLS on this listener; nil: plaintext.
        public var tls: TLS?
        /// The methods this listener serves; the others are answered UNIMPLEMENTED.
        public var services: Services
        /// Whether connections count bytes and requests in flight (``InferWireServer/traffic``)
        /// for metrics. Off, the request path does no counting of its own.
        public var countsTraffic: Bool
        /// Whether infer requests are written to the access log: a sample of them (the
        /// dispatcher's ``InferWireEngine/RequestDispatcher/accessLogSample``), at info level,
        /// with the connection's peer.
        public var logsAccess: Bool

        /// Which methods a listener serves (PROTOCOL.md section 1c). SERVER_LIVE,
        /// SERVER_READY and SERVER_METADATA are served on every listener.
        public struct Services: OptionSet, Sendable, Hashable {
            public let rawValue: UInt8
            public init(rawValue: UInt8) { self.rawValue = rawValue }

            /// INFER, MODEL_READY, MODEL_METADATA, MODEL_STATISTICS.
            public static let inference = Services(rawValue: 1 << 0)
            /// The management methods, 100–199.
            public static let management = Services(rawValue: 1 << 1)
            public static let all: Services = [.inference, .management]

            /// Why this listener does not answer `method`; nil when it does.
            func refusal(method: UInt16) -> InferWireError? {
                if method >= 100 && method < 200 {
                    guard !self.contains(.management) else { return nil }
                    return InferWireError(
                        code: .unimplemented,
                        message: "management methods are served on the management listener, not this one")
                }
                if (4...7).contains(method) && !self.contains(.inference) {
                    return InferWireError(
                        code: .unimplemented, message: "inference is served on the inference listener, not this one")
                }
                return nil
            }
        }

        public init(
            host: String = "127.0.0.1", port: Int = 8500, limits: Limits = .defaults, tls: TLS? = nil,
            services: Services = .all, countsTraffic: Bool = true, logsAccess: Bool = false
        ) {
            self.host = host
            self.port = port
            self.limits = limits
            self.tls = tls
            self.services = services
            self.countsTraffic = countsTraffic
            self.logsAccess = logsAccess
        }

        /// 127.0.0.1:8500 with default limits.
        public static var defaults: Configuration { Configuration() }
    }

    private let configuration: Configuration
    private let dispatcher: RequestDispatcher
    private let tlsContexts: TLSContextStore?
    private let credentialChecks: CredentialChecks?
    /// Created when the server starts listening; its counts feed metrics.
    private let limiterBox = Mutex<ConnectionLimiter?>(nil)

    /// Whether the listener has bound its port and accepts connections.
    public var isListening: Bool { self.limiterBox.withLock { $0 != nil } }

    /// Connection counts of this listener (zero before it listens).
    public var connectionCounts: ConnectionCounts {
        self.limiterBox.withLock { $0 }?.counts
            ?? ConnectionCounts(open: 0, accepted: 0, refusedOverTotal: 0, refusedOverAddress: 0)
    }

    /// Bytes and requests in flight on this listener; nil when it does not count them
    /// (``Configuration/countsTraffic``).
    public let traffic: ListenerTraffic?

    /// What this listener serves, for logs and metrics labels.
    public var services: Configuration.Services { self.configuration.services }
    private let logger: Logger
    private let group: any EventLoopGroup
    private let onListening: (@Sendable (SocketAddress) -> Void)?
    private let metricsFactory: (any MetricsFactory)?

    /// The metric name connections closed or refused for a reason are counted under
    /// (swift-metrics), with `listener` and `reason` dimensions: `connection-limit`,
    /// `handshake-timeout`, `protocol-error`, `http`, `authentication`, `plaintext-on-tls`, `tls`.
    public static let rejectionsMetric = "inferwire_connections_rejected_total"

    /// The listener's name in metrics: `management` for a listener serving only management.
    public var metricsName: String { self.configuration.services == .management ? "management" : "inference" }

    /// - Parameters:
    ///   - configuration: where to listen and the limits to enforce.
    ///   - dispatcher: what answers requests.
    ///   - logger: where connection-level events are logged.
    ///   - authenticator: who connections are; nil serves every connection as
    ///     ``InferWireCore/Principal/anonymous``.
    ///   - eventLoopGroup: the I/O threads; one per core by default.
    ///   - onListening: called once with the bound address (the real port when `port` is 0).
    ///   - metricsFactory: where rejected connections are counted (``rejectionsMetric``); nil:
    ///     the process's `MetricsSystem.factory`.
    /// - Throws: when the TLS files do not load.
    public init(
        configuration: Configuration,
        dispatcher: RequestDispatcher,
        logger: Logger,
        authenticator: Authenticator? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onListening: (@Sendable (SocketAddress) -> Void)? = nil,
        metricsFactory: (any MetricsFactory)? = nil
    ) throws(InferWireError) {
        self.metricsFactory = metricsFactory
        self.tlsContexts = try configuration.tls.map { tls throws(InferWireError) in try TLSContextStore(files: tls) }
        self.credentialChecks = authenticator.map { CredentialChecks(authenticator: $0) }
        self.configuration = configuration
        self.traffic = configuration.countsTraffic ? ListenerTraffic() : nil
        self.dispatcher = dispatcher
        self.logger = logger
        self.group = eventLoopGroup
        self.onListening = onListening
    }

    /// Rereads the TLS certificate, key and client CA (new connections use them); on
    /// failure the current ones stay and the error is thrown. Credentials are reloaded
    /// through the ``InferWireAuth/Authenticator``.
    public func reloadTLS() throws(InferWireError) {
        try self.tlsContexts?.reload()
    }

    public func run() async throws {
        let dispatcher = self.dispatcher
        let tlsContexts = self.tlsContexts
        let credentialChecks = self.credentialChecks
        let services = self.configuration.services
        let traffic = self.traffic
        let logsAccess = self.configuration.logsAccess
        var limits = self.configuration.limits
        let logger = self.logger
        if let openFiles = OpenFileLimit.raiseToHardLimit() {
            let ceiling = OpenFileLimit.connectionCeiling(
                openFiles: openFiles, inUse: OpenFileLimit.openDescriptors() ?? 32)
            if ceiling < limits.maxConnections {
                logger.notice(
                    "serving at most \(ceiling) connections, not \(limits.maxConnections): the open-file limit is \(openFiles) (raise it with ulimit -n)"
                )
                limits.maxConnections = ceiling
                limits.maxConnectionsPerAddress = min(limits.maxConnectionsPerAddress, ceiling)
            }
        }
        let rejections = RateLimitedLog(
            logger: logger,
            counting: .init(
                metric: Self.rejectionsMetric, dimensions: [("listener", self.metricsName)],
                factory: self.metricsFactory ?? MetricsSystem.factory))
        let limiter = ConnectionLimiter(
            maxConnections: limits.maxConnections, maxPerAddress: limits.maxConnectionsPerAddress)
        let listener = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            // Lets a client half-close after its last request and still read the answers.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: self.configuration.host, port: self.configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture { () -> any Channel in
                    let address = channel.remoteAddress?.ipAddress ?? "unknown"
                    let pipeline = channel.pipeline.syncOperations
                    if let tlsContexts {
                        try pipeline.addHandler(TLSSniffingHandler(contexts: tlsContexts, rejections: rejections))
                    }
                    switch limiter.open(from: address) {
                    case .admit:
                        channel.closeFuture.whenComplete { _ in limiter.close(from: address) }
                        try pipeline.addHandler(
                            ServerConnectionHandler(
                                dispatcher: dispatcher, limits: limits, logger: logger, rejections: rejections,
                                credentialChecks: credentialChecks, services: services, traffic: traffic,
                                logsAccess: logsAccess))
                    case .reject(let reason):
                        rejections.log("connection-limit", "refusing a connection from \(address): \(reason)")
                        try pipeline.addHandler(RefusingHandler(reason: reason, waitsForTLS: tlsContexts != nil))
                    }
                    return channel
                }
            }

        guard let address = listener.channel.localAddress else {
            throw InferWireError(code: .internal, message: "listening socket has no local address")
        }
        self.limiterBox.withLock { $0 = limiter }
        // Tools read the inference port from "listening on HOST:PORT"; the management listener
        // words it apart.
        let listening = services == .management ? "management listener on" : "listening on"
        let security = [tlsContexts != nil ? "TLS" : nil, credentialChecks != nil ? "authentication required" : nil]
            .compactMap { $0 }
        logger.info(
            "\(listening) \(address.ipAddress ?? self.configuration.host):\(address.port ?? 0)\(security.isEmpty ? "" : " (\(security.joined(separator: ", ")))")"
        )
        self.onListening?(address)

        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { connections in
                if let credentialChecks {
                    connections.addTask { await credentialChecks.run() }
                }
                defer { credentialChecks?.finish() }
                try await listener.executeThenClose { inbound in
                    for try await connection in inbound {
                        connections.addTask { await Self.serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            logger.info("shutting down: no new connections; draining in-flight requests")
            dispatcher.beginShutdown()
            listener.channel.close(promise: nil)
        }
        logger.info("stopped")
    }

    /// Holds one connection's place in the task group until it closes, asks it to
    /// drain on graceful shutdown, and closes it if the task is cancelled.
    private static func serve(_ connection: any Channel) async {
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                try? await connection.closeFuture.get()
            } onCancel: {
                connection.close(promise: nil)
            }
        } onGracefulShutdown: {
            connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }
}

/// Bytes read and written by one listener's connections, and its requests in flight.
/// Connections add their byte counts once per read burst and flush, not per frame.
public final class ListenerTraffic: Sendable {
    let bytesIn = Atomic<UInt64>(0)
    let bytesOut = Atomic<UInt64>(0)
    let requestsInFlight = Atomic<Int>(0)

    init() {}

    /// Bytes read from and written to connections since start (TLS: the plaintext).
    public var bytes: (received: UInt64, sent: UInt64) {
        (self.bytesIn.load(ordering: .relaxed), self.bytesOut.load(ordering: .relaxed))
    }

    /// Requests dispatched and not yet answered.
    public var inFlight: Int { max(0, self.requestsInFlight.load(ordering: .relaxed)) }
}
