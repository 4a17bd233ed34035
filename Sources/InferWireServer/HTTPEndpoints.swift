public import CoreMetrics
import InferWireCore
public import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle
import Synchronization

/// Whether the server should receive traffic, and if not, why.
public struct Readiness: Sendable, Equatable {
    /// What keeps the server from being ready; empty when it is.
    public var problems: [String]
    /// What is wrong without stopping the server from serving (the shared rollout state's
    /// store unreachable, say): reported, yet the server stays ready.
    public var degraded: [String]

    public init(problems: [String], degraded: [String] = []) {
        self.problems = problems
        self.degraded = degraded
    }

    public var isReady: Bool { self.problems.isEmpty }
}

/// The HTTP listener for operators and orchestrators: Prometheus metrics and health probes
/// (`/metrics`, `/health/live`, `/health/ready`, and KServe's `/v2/health/live` and
/// `/v2/health/ready`). GET and HEAD only; small requests only; slow clients are closed.
public final class HTTPEndpointServer: Service, Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Connections served at once; more are answered 503 and closed.
        public var maxConnections: Int
        /// A connection that sends nothing for this long is closed.
        public var readTimeout: Duration

        public init(
            host: String = "127.0.0.1", port: Int = 8502, maxConnections: Int = 256,
            readTimeout: Duration = .seconds(30)
        ) {
            self.host = host
            self.port = port
            self.maxConnections = maxConnections
            self.readTimeout = readTimeout
        }

        /// 127.0.0.1:8502, 256 connections, 30 s read timeout.
        public static var defaults: Configuration { Configuration() }
    }

    /// What the endpoints answer from.
    public struct Sources: Sendable {
        /// Liveness: the process answers; false only when it should be restarted.
        public var live: @Sendable () -> Bool
        public var readiness: @Sendable () -> Readiness
        /// The Prometheus text exposition; nil when the server keeps no metrics (`/metrics`
        /// answers 404 saying so).
        public var metrics: (@Sendable () -> String)?

        public init(
            live: @escaping @Sendable () -> Bool = { true }, readiness: @escaping @Sendable () -> Readiness,
            metrics: (@Sendable () -> String)?
        ) {
            self.live = live
            self.readiness = readiness
            self.metrics = metrics
        }
    }

    private let configuration: Configuration
    private let sources: Sources
    private let logger: Logger
    private let group: any EventLoopGroup
    private let onListening: (@Sendable (SocketAddress) -> Void)?
    private let metricsFactory: (any MetricsFactory)?

    /// The metric name answered requests are counted under (swift-metrics), with `path` (one
    /// of the served paths, or `other`) and `code` (the HTTP status) dimensions.
    public static let requestsMetric = "inferwire_http_requests_total"

    /// - Parameter metricsFactory: where requests are counted (``requestsMetric``); nil: the
    ///   process's `MetricsSystem.factory`.
    public init(
        configuration: Configuration, sources: Sources, logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onListening: (@Sendable (SocketAddress) -> Void)? = nil, metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.metricsFactory = metricsFactory
        self.configuration = configuration
        self.sources = sources
        self.logger = logger
        self.group = eventLoopGroup
        self.onListening = onListening
    }

    public func run() async throws {
        let sources = self.sources
        let factory = self.metricsFactory ?? MetricsSystem.factory
        let limit = self.configuration.maxConnections
        let open = Atomic<Int>(0)
        let readTimeout = TimeAmount.nanoseconds(self.configuration.readTimeout.inNanoseconds)
        let listener = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: self.configuration.host, port: self.configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture { () -> any Channel in
                    let admitted = open.wrappingAdd(1, ordering: .relaxed).newValue <= limit
                    channel.closeFuture.whenComplete { _ in open.wrappingSubtract(1, ordering: .relaxed) }
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    try pipeline.addHandler(IdleStateHandler(readTimeout: readTimeout))
                    try pipeline.addHandler(
                        HTTPEndpointHandler(sources: sources, admitted: admitted, metricsFactory: factory))
                    return channel
                }
            }
        guard let address = listener.channel.localAddress else {
            throw InferWireError(code: .internal, message: "the HTTP listener has no local address")
        }
        // Not "listening on": tools read the inference port from that line.
        self.logger.info("HTTP endpoints (metrics, health) on \(address.ipAddress ?? ""):\(address.port ?? 0)")
        self.onListening?(address)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { connections in
                try await listener.executeThenClose { inbound in
                    for try await connection in inbound {
                        connections.addTask {
                            // Nothing to drain on a probe connection: shutdown closes it.
                            await withGracefulShutdownHandler {
                                await withTaskCancellationHandler {
                                    try? await connection.closeFuture.get()
                                } onCancel: {
                                    connection.close(promise: nil)
                                }
                            } onGracefulShutdown: {
                                connection.close(promise: nil)
                            }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            listener.channel.close(promise: nil)
        }
    }
}

/// Answers one HTTP/1.1 request at a time on a connection.
final class HTTPEndpointHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Request bodies are not expected; one larger than this is refused with 413.
    static let maxBody = 16 * 1024

    private let sources: HTTPEndpointServer.Sources
    private let admitted: Bool
    private let metricsFactory: any MetricsFactory
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    static let paths: Set<String> = [
        "/metrics", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready",
    ]

    init(sources: HTTPEndpointServer.Sources, admitted: Bool, metricsFactory: any MetricsFactory) {
        self.sources = sources
        self.admitted = admitted
        self.metricsFactory = metricsFactory
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.bodyBytes = 0
        case .body(let body):
            self.bodyBytes += body.readableBytes
            // Refused as soon as it is too large: the rest is not waited for.
            if self.bodyBytes > Self.maxBody, let head = self.head {
                self.head = nil
                self.send(
                    .payloadTooLarge, "request bodies are not accepted here\n", head: head, close: true,
                    context: context)
            }
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            self.respond(to: head, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard self.admitted else {
            return self.send(
                .serviceUnavailable, "too many HTTP connections\n", head: head, close: true, context: context)
        }
        let path = Self.path(head)
        guard Self.paths.contains(path) else {
            return self.send(
                .notFound, "not found; try /metrics, /health/live, /health/ready\n", head: head, context: context)
        }
        guard head.method == .GET || head.method == .HEAD else {
            return self.send(
                .methodNotAllowed, "only GET and HEAD\n", head: head, extraHeaders: [("Allow", "GET, HEAD")],
                context: context)
        }
        switch path {
        case "/metrics":
            guard let metrics = self.sources.metrics else {
                return self.send(.notFound, "metrics are switched off on this server\n", head: head, context: context)
            }
            self.send(
                .ok, metrics(), head: head, contentType: "text/plain; version=0.0.4; charset=utf-8", context: context)
        case "/health/live", "/v2/health/live":
            let live = self.sources.live()
            self.send(live ? .ok : .serviceUnavailable, live ? "live\n" : "not live\n", head: head, context: context)
        default:
            let readiness = self.sources.readiness()
            let body =
                (readiness.isReady ? "ready\n" : "not ready:\n" + readiness.problems.map { "- \($0)\n" }.joined())
                + (readiness.degraded.isEmpty ? "" : "degraded:\n" + readiness.degraded.map { "- \($0)\n" }.joined())
            self.send(readiness.isReady ? .ok : .serviceUnavailable, body, head: head, context: context)
        }
    }

    static func path(_ head: HTTPRequestHead) -> String {
        head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
    }

    private func send(
        _ status: HTTPResponseStatus, _ body: String, head: HTTPRequestHead,
        contentType: String = "text/plain; charset=utf-8", extraHeaders: [(String, String)] = [], close: Bool = false,
        context: ChannelHandlerContext
    ) {
        let path = Self.path(head)
        Counter(
            label: HTTPEndpointServer.requestsMetric,
            dimensions: [("path", Self.paths.contains(path) ? path : "other"), ("code", "\(status.code)")],
            factory: self.metricsFactory
        ).increment()
        let keepAlive = head.isKeepAlive && !close
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", "\(body.utf8.count)")])
        headers.add(contentsOf: extraHeaders)
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
            promise: nil)
        if head.method != .HEAD {
            context.write(
                self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        let done = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            // Shut the output and let the peer finish sending: closing with its bytes unread
            // would reset the connection and could destroy the answer before it is read.
            let channel = context.channel
            done.whenComplete { _ in
                channel.close(mode: .output, promise: nil)
                channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
            }
        }
    }
}
