import InferWireCore
public import InferWireEngine
import InferWireProto
import InferWireWire
public import Logging
public import NIOCore
import NIOPosix
public import ServiceLifecycle

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
            /// nil, the default, keeps idle connections open. Off by default because the
            /// clients do not reconnect by themselves yet: a long-lived client that sat idle
            /// would see its next call fail with UNAVAILABLE.
            public var idleTimeout: Duration?

            public init(
                maxFrameSize: Int = 64 << 20, maxConcurrentRequests: Int = 1024, maxConnections: Int = 16_384,
                maxConnectionsPerAddress: Int = 4096, handshakeTimeout: Duration = .seconds(10),
                idleTimeout: Duration? = nil
            ) {
                self.maxFrameSize = maxFrameSize
                self.maxConcurrentRequests = maxConcurrentRequests
                self.maxConnections = maxConnections
                self.maxConnectionsPerAddress = maxConnectionsPerAddress
                self.handshakeTimeout = handshakeTimeout
                self.idleTimeout = idleTimeout
            }

            /// 64 MiB frames, 1024 requests in flight per connection, 16,384 connections (4,096
            /// per client address), 10 s to send the preface, no idle timeout.
            public static var defaults: Limits { Limits() }
        }

        public init(host: String = "127.0.0.1", port: Int = 8500, limits: Limits = .defaults) {
            self.host = host
            self.port = port
            self.limits = limits
        }

        /// 127.0.0.1:8500 with default limits.
        public static var defaults: Configuration { Configuration() }
    }

    private let configuration: Configuration
    private let dispatcher: RequestDispatcher
    private let logger: Logger
    private let group: any EventLoopGroup
    private let onListening: (@Sendable (SocketAddress) -> Void)?

    /// - Parameters:
    ///   - configuration: where to listen and the limits to enforce.
    ///   - dispatcher: what answers requests.
    ///   - logger: where connection-level events are logged.
    ///   - eventLoopGroup: the I/O threads; one per core by default.
    ///   - onListening: called once with the bound address (the real port when `port` is 0).
    public init(
        configuration: Configuration,
        dispatcher: RequestDispatcher,
        logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onListening: (@Sendable (SocketAddress) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.dispatcher = dispatcher
        self.logger = logger
        self.group = eventLoopGroup
        self.onListening = onListening
    }

    public func run() async throws {
        let dispatcher = self.dispatcher
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
        let rejections = RateLimitedLog(logger: logger)
        let limiter = ConnectionLimiter(
            maxConnections: limits.maxConnections, maxPerAddress: limits.maxConnectionsPerAddress)
        let listener = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Lets a client half-close after its last request and still read the answers.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: self.configuration.host, port: self.configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture { () -> any Channel in
                    let address = channel.remoteAddress?.ipAddress ?? "unknown"
                    switch limiter.open(from: address) {
                    case .admit:
                        channel.closeFuture.whenComplete { _ in limiter.close(from: address) }
                        try channel.pipeline.syncOperations.addHandler(
                            ServerConnectionHandler(
                                dispatcher: dispatcher, limits: limits, logger: logger, rejections: rejections))
                    case .reject(let reason):
                        rejections.log("connection-limit", "refusing a connection from \(address): \(reason)")
                        try channel.pipeline.syncOperations.addHandler(RefusingHandler(reason: reason))
                    }
                    return channel
                }
            }

        guard let address = listener.channel.localAddress else {
            throw InferWireError(code: .internal, message: "listening socket has no local address")
        }
        logger.info("listening on \(address.ipAddress ?? self.configuration.host):\(address.port ?? 0)")
        self.onListening?(address)

        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { connections in
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

    /// Answers a connection over the limits with GOAWAY (RESOURCE_EXHAUSTED, the reason) and
    /// closes it: a client reads why instead of seeing a bare reset.
    final class RefusingHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let reason: String

        init(reason: String) { self.reason = reason }

        func channelActive(context: ChannelHandlerContext) {
            var goAway = Inferwire_V1_GoAway()
            goAway.code = InferWireError.Code.resourceExhausted.wire
            goAway.message = self.reason
            let bytes: [UInt8] = (try? goAway.serializedBytes()) ?? []
            let frame = Frame.encode(
                FrameHeader(payloadLength: 0, type: .goAway), bytes: bytes, allocator: context.channel.allocator)
            let channel = context.channel
            context.writeAndFlush(self.wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
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
