import InferWireCore
public import InferWireEngine
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

        /// What one connection may ask of the server.
        public struct Limits: Sendable {
            /// Largest frame payload accepted, in bytes (also the cap on an inflated payload).
            public var maxFrameSize: Int
            /// Requests one connection may have in flight; more are answered RESOURCE_EXHAUSTED.
            public var maxConcurrentRequests: Int

            public init(maxFrameSize: Int = 64 << 20, maxConcurrentRequests: Int = 1024) {
                self.maxFrameSize = maxFrameSize
                self.maxConcurrentRequests = maxConcurrentRequests
            }

            /// 64 MiB frames, 1024 requests in flight per connection.
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
        let limits = self.configuration.limits
        let logger = self.logger
        let listener = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Lets a client half-close after its last request and still read the answers.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: self.configuration.host, port: self.configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture { () -> any Channel in
                    try channel.pipeline.syncOperations.addHandler(
                        ServerConnectionHandler(dispatcher: dispatcher, limits: limits, logger: logger))
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
