public import InferWireCore
package import InferWireProto
import InferWireWire
public import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// An InferWire connection. One client multiplexes any number of concurrent calls
/// over one TCP connection; answers may arrive in any order.
///
/// ```swift
/// let client = try await InferWireClient.connect(host: "127.0.0.1", port: 8500)
/// let result = try await client.infer(model: "add_sub", inputs: [
///     Tensor(name: "INPUT0", values: [1, 2] as [Float], shape: [1, 2]),
///     Tensor(name: "INPUT1", values: [3, 4] as [Float], shape: [1, 2]),
/// ])
/// print(result["OUTPUT0"]?.values(as: Float.self) ?? [])
/// await client.close()
/// ```
///
/// When the connection ends — the server closed it as idle, restarted, or shut down — the
/// next call opens a new one with the same settings (TLS, credentials); a call that
/// certainly never ran is sent once more on it (PROTOCOL.md section 5).
///
/// Every failure is thrown as an ``InferWireError`` carrying the server's status code.
public final class InferWireClient: Sendable {
    /// How a client connects and calls.
    public struct Configuration: Sendable {
        /// How long to wait for TCP connect and the server's HELLO.
        public var connectTimeout: Duration
        /// Deadline for calls that give none; nil waits indefinitely.
        public var defaultTimeout: Duration?
        /// Compress request payloads of 256 bytes or more and ask for compressed responses.
        public var compression: Bool
        /// Largest response payload this client accepts, in bytes.
        public var maxFrameSize: Int
        /// TLS to the server; nil: plaintext.
        public var tls: TLS?
        /// Credentials presented once per connection (PROTOCOL.md section 1b): a token from the
        /// server's token file, or a JWT.
        public var bearerToken: String?

        public init(
            connectTimeout: Duration = .seconds(5), defaultTimeout: Duration? = nil,
            compression: Bool = false, maxFrameSize: Int = 64 << 20, tls: TLS? = nil, bearerToken: String? = nil
        ) {
            self.connectTimeout = connectTimeout
            self.defaultTimeout = defaultTimeout
            self.compression = compression
            self.maxFrameSize = maxFrameSize
            self.tls = tls
            self.bearerToken = bearerToken
        }

        /// 5 s connect timeout, no default deadline, no compression, 64 MiB frames, plaintext,
        /// no credentials.
        public static var defaults: Configuration { Configuration() }

        /// How the client speaks TLS. The server's certificate chain and host name are
        /// always verified.
        public struct TLS: Sendable, Hashable {
            /// PEM file of the CAs to trust; nil: the system's trust store.
            public var caFile: String?
            /// A client certificate chain (PEM) for servers that require one (mutual TLS).
            public var certificateChainFile: String?
            public var privateKeyFile: String?
            /// The name the server's certificate must carry; nil: the host connected to.
            public var serverName: String?

            public init(
                caFile: String? = nil, certificateChainFile: String? = nil, privateKeyFile: String? = nil,
                serverName: String? = nil
            ) {
                self.caFile = caFile
                self.certificateChainFile = certificateChainFile
                self.privateKeyFile = privateKeyFile
                self.serverName = serverName
            }

            /// The system's trust store, no client certificate.
            public static var system: TLS { TLS() }

            /// A NIOSSL client context; reads the files.
            package func makeContext() throws(InferWireError) -> NIOSSLContext {
                do {
                    var configuration = TLSConfiguration.makeClientConfiguration()
                    configuration.minimumTLSVersion = .tlsv12
                    configuration.applicationProtocols = ["inferwire/1"]
                    if let caFile = self.caFile {
                        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
                    }
                    if let chain = self.certificateChainFile {
                        configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(chain).map {
                            .certificate($0)
                        }
                        guard let key = self.privateKeyFile else {
                            throw InferWireError(
                                code: .invalidArgument, message: "a TLS client certificate needs its private key")
                        }
                        configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                    }
                    return try NIOSSLContext(configuration: configuration)
                } catch let error as InferWireError {
                    throw error
                } catch {
                    throw InferWireError(
                        code: .invalidArgument, message: "cannot set up TLS: \(error)", cause: error)
                }
            }

            /// The SNI and verification name for `host`: nil for an IP address (NIOSSL then
            /// verifies the certificate against the address connected to).
            package func serverHostname(for host: String) -> String? {
                let name = self.serverName ?? host
                let isAddress = (try? SocketAddress(ipAddress: name, port: 0)) != nil
                return isAddress ? nil : name
            }
        }
    }

    /// The limits and identity the server announced on the current connection.
    public var hello: ServerHello { self.connections.withLock { $0.current.hello } }
    /// Who the current connection acts as, when the server authenticated it (a bearer token,
    /// or a client certificate it knows); nil on a server without authentication.
    public var principal: Principal? { self.connections.withLock { $0.current.principal } }
    /// Connections this client has opened: 1, plus one per reconnection.
    public var connectionsOpened: Int { self.connections.withLock { $0.opened } }
    /// Whether the current connection still takes requests (no GOAWAY, not closed); when not,
    /// the next call opens a new one.
    public var isConnectionOpen: Bool { self.connections.withLock { $0.current.status.isAccepting } }
    public let configuration: Configuration
    /// The server's address, as given to ``connect(host:port:configuration:eventLoopGroup:)``.
    public let host: String
    public let port: Int
    private let group: any EventLoopGroup
    private let connections: Mutex<Connections>
    private let nextPing = Atomic<UInt64>(0)

    /// The current connection and, while one is being opened, its future. A connection that
    /// received GOAWAY or closed is replaced for the next call (PROTOCOL.md section 5).
    private struct Connections: Sendable {
        var current: ClientConnection
        var reconnecting: EventLoopFuture<ClientConnection>?
        var opened = 1
        var closed = false
    }

    private init(
        connection: ClientConnection, host: String, port: Int, configuration: Configuration,
        group: any EventLoopGroup
    ) {
        self.connections = Mutex(Connections(current: connection))
        self.host = host
        self.port = port
        self.configuration = configuration
        self.group = group
    }

    /// Opens a connection and completes the handshake (and authentication, with a bearer
    /// token). Later connections, opened when this one ends, use the same settings.
    public static func connect(
        host: String, port: Int, configuration: Configuration = .defaults,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> InferWireClient {
        let connection = try await ClientConnection.open(
            host: host, port: port, configuration: configuration, group: eventLoopGroup
        ).get()
        return InferWireClient(
            connection: connection, host: host, port: port, configuration: configuration, group: eventLoopGroup)
    }

    /// Opens a connection like ``connect(host:port:configuration:eventLoopGroup:)``, as a
    /// future: a caller can bound its wait by a deadline of its own.
    package static func open(
        host: String, port: Int, configuration: Configuration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) -> EventLoopFuture<InferWireClient> {
        ClientConnection.open(host: host, port: port, configuration: configuration, group: eventLoopGroup).map {
            InferWireClient(
                connection: $0, host: host, port: port, configuration: configuration, group: eventLoopGroup)
        }
    }

    /// Whether ``close()`` was called.
    package var isClosed: Bool { self.connections.withLock { $0.closed } }

    private enum NextConnection {
        case use(ClientConnection)
        case wait(EventLoopFuture<ClientConnection>)
    }

    /// The connection for the next call: the current one while it takes requests, else a new
    /// one (a single reconnection, however many calls wait for it).
    private func connection() async throws -> ClientConnection {
        switch try self.nextConnection() {
        case .use(let connection):
            return connection
        case .wait(let pending):
            return try await pending.get()
        }
    }

    /// The current connection while it takes requests, else the reconnection every caller waits for.
    private func nextConnection() throws(InferWireError) -> NextConnection {
        try self.connections.withLock { state throws(InferWireError) -> NextConnection in
            guard !state.closed else { throw InferWireError(code: .unavailable, message: "the client is closed") }
            if state.current.status.isAccepting { return .use(state.current) }
            if let pending = state.reconnecting { return .wait(pending) }
            let pending = ClientConnection.open(
                host: self.host, port: self.port, configuration: self.configuration, group: self.group)
            state.reconnecting = pending
            pending.whenComplete { result in
                self.connections.withLock { state in
                    state.reconnecting = nil
                    guard case .success(let connection) = result else { return }
                    if state.closed {
                        connection.channel.close(promise: nil)
                    } else {
                        state.current = connection
                        state.opened += 1
                    }
                }
            }
            return .wait(pending)
        }
    }

    /// Closes the connection and stops reconnecting; calls still waiting fail with UNAVAILABLE.
    public func close() async {
        let channel = self.connections.withLock { state in
            state.closed = true
            return state.current.channel
        }
        try? await channel.close()
    }

    deinit {
        // A client dropped without close() must not leak its socket.
        self.connections.withLock { $0.current.channel.close(promise: nil) }
    }

    // MARK: Methods

    /// Runs a model from a request message (the CLI and tests build these directly).
    package func infer(_ request: Inferwire_V1_InferRequest, timeout: Duration? = nil) async throws
        -> Inferwire_V1_InferResponse
    {
        try await self.call(.infer, request, as: Inferwire_V1_InferResponse.self, timeout: timeout)
    }

    /// Runs a model on `inputs` and returns its outputs as tensors.
    /// - Parameters:
    ///   - version: an exact version; or `label` (`stable`, `canary`); or neither, to let the server route.
    ///   - outputs: the outputs to return; empty for all.
    public func infer(
        model: String, version: Int64? = nil, label: String? = nil, inputs: [Tensor], outputs: [String] = [],
        timeout: Duration? = nil, traceParent: TraceParent? = nil, traceState: String? = nil
    ) async throws -> InferResult {
        var request = Inferwire_V1_InferRequest()
        request.modelName = model
        if let version { request.version.version = version } else if let label { request.version.label = label }
        request.inputs = inputs.map(\.wire)
        request.outputNames = outputs
        if let traceParent {
            request.traceparent = traceParent.description
            request.tracestate = traceState ?? ""
        }
        let response = try await self.infer(request, timeout: timeout)
        return InferResult(
            modelName: response.modelName, modelVersion: response.modelVersion,
            outputs: try response.outputs.map { try Tensor(wire: $0) })
    }

    /// Whether the server process is up and answering.
    public func serverLive(timeout: Duration? = nil) async throws -> Bool {
        try await self.call(
            .serverLive, Inferwire_V1_ServerLiveRequest(), as: Inferwire_V1_ServerLiveResponse.self, timeout: timeout
        ).live
    }

    /// Why the server does not accept work, one sentence per reason; empty when it does (it is
    /// ready: not shutting down, every model has a version serving, no version failed to load).
    public func serverNotReadyReasons(timeout: Duration? = nil) async throws -> [String] {
        let answer = try await self.call(
            .serverReady, Inferwire_V1_ServerReadyRequest(), as: Inferwire_V1_ServerReadyResponse.self, timeout: timeout
        )
        return answer.ready
            ? [] : answer.notReadyReasons.isEmpty ? ["the server says it is not ready"] : answer.notReadyReasons
    }

    /// Whether the server accepts work: not shutting down, and every model has a version serving.
    public func serverReady(timeout: Duration? = nil) async throws -> Bool {
        try await self.call(
            .serverReady, Inferwire_V1_ServerReadyRequest(), as: Inferwire_V1_ServerReadyResponse.self, timeout: timeout
        ).ready
    }

    /// The server's name, release, protocol versions, extensions and runtime facts.
    public func serverMetadata(timeout: Duration? = nil) async throws -> ServerMetadata {
        ServerMetadata(
            try await self.call(
                .serverMetadata, Inferwire_V1_ServerMetadataRequest(), as: Inferwire_V1_ServerMetadataResponse.self,
                timeout: timeout))
    }

    /// Whether `name` (or that version of it) can serve; an unknown model is not ready, not an error.
    public func modelReady(_ name: String, version: Int64? = nil, timeout: Duration? = nil) async throws
        -> ModelReadiness
    {
        var request = Inferwire_V1_ModelReadyRequest()
        request.name = name
        if let version { request.version.version = version }
        return ModelReadiness(
            try await self.call(.modelReady, request, as: Inferwire_V1_ModelReadyResponse.self, timeout: timeout))
    }

    /// A model's inputs, outputs and versions.
    /// - Parameters:
    ///   - version: an exact version; or `label` (`stable`, `canary`); or neither, for the one the server routes to.
    public func modelMetadata(_ name: String, version: Int64? = nil, label: String? = nil, timeout: Duration? = nil)
        async throws -> ModelMetadata
    {
        var request = Inferwire_V1_ModelMetadataRequest()
        request.name = name
        if let version { request.version.version = version } else if let label { request.version.label = label }
        return ModelMetadata(
            try await self.call(.modelMetadata, request, as: Inferwire_V1_ModelMetadataResponse.self, timeout: timeout))
    }

    /// Request counts, batch sizes and queue/compute times of every version of `name`
    /// (or of every model when `name` is empty).
    public func modelStatistics(_ name: String = "", timeout: Duration? = nil) async throws -> [VersionStatistics] {
        var request = Inferwire_V1_ModelStatisticsRequest()
        request.name = name
        return try await self.call(
            .modelStatistics, request, as: Inferwire_V1_ModelStatisticsResponse.self, timeout: timeout
        )
        .versions.map(VersionStatistics.init)
    }

    /// Round-trips a PING frame and returns the time it took.
    /// - Parameter timeout: how long to wait for the PONG (DEADLINE_EXCEEDED after).
    public func ping(timeout: Duration = .seconds(5)) async throws -> Duration {
        let token = self.nextPing.wrappingAdd(1, ordering: .relaxed).newValue
        let connection = try await self.connection()
        let loop = connection.channel.eventLoop
        let promise = loop.makePromise(of: Void.self)
        let handler = connection.handler
        let start = ContinuousClock.now
        let wait = TimeAmount.nanoseconds(timeout.inNanoseconds)
        loop.execute { handler.value.ping(token: token, timeout: wait, promise: promise) }
        do {
            try await promise.futureResult.get()
        } catch {
            throw Self.wrap(error)
        }
        return ContinuousClock.now - start
    }

    /// Calls any method: encodes `request`, sends it, and decodes the answer as `Response`.
    /// A call that never ran — not sent before its connection ended, or answered UNAVAILABLE
    /// after the server's GOAWAY — is sent once more, on a new connection.
    package func call<Request: Message, Response: Message>(
        _ method: Inferwire_V1_Method, _ request: Request, as: Response.Type, timeout: Duration? = nil
    ) async throws -> Response {
        // Encode (and compress) on the caller's thread, not the event loop.
        let bytes: [UInt8] = try request.serializedBytes()
        let timeout = timeout ?? self.configuration.defaultTimeout
        var connection = try await self.connection()
        do {
            return try await self.call(method, bytes, as: Response.self, timeout: timeout, on: connection)
        } catch let error as InferWireError where Self.neverRan(error, on: connection) {
            connection = try await self.connection()
            return try await self.call(method, bytes, as: Response.self, timeout: timeout, on: connection)
        }
    }

    /// How one attempt at a call failed, for a caller that may send the call to another server
    /// (``BalancedClient``).
    package struct AttemptFailure: Error {
        package enum Kind: Sendable, Hashable {
            /// No connection could be opened (TCP connect, TLS, handshake, credentials): nothing was sent.
            case connectFailed
            /// The call never reached the wire: its connection ended or received GOAWAY first, or
            /// the client is closed.
            case notSent
            /// The server answered UNAVAILABLE. InferWire servers give that answer only before a
            /// call runs: the connection is draining, the server or model version is shutting
            /// down, no version is ready, the management service is not running.
            case unavailable
            /// The connection ended while the call was in flight: the server may have run it.
            case connectionLost
            /// Anything else: the server's answer, the deadline, cancellation, a local check.
            case final
        }

        package var kind: Kind
        package var error: InferWireError

        package init(_ kind: Kind, _ error: InferWireError) {
            self.kind = kind
            self.error = error
        }
    }

    /// Thrown by the timer that bounds a wait for a connection.
    private struct WaitExpired: Error {}

    /// Makes one attempt at a call, never sending it twice: the caller decides what a failure
    /// means (``AttemptFailure/Kind``). Waiting for a connection counts against `timeout`.
    package func attempt<Response: Message>(
        _ method: Inferwire_V1_Method, _ bytes: [UInt8], as: Response.Type, timeout: Duration?
    ) async throws(AttemptFailure) -> Response {
        let connection: ClientConnection
        do {
            switch try self.nextConnection() {
            case .use(let current):
                connection = current
            case .wait(let pending):
                connection = try await Self.wait(for: pending, within: timeout)
            }
        } catch is WaitExpired {
            throw AttemptFailure(
                .final, InferWireError(code: .deadlineExceeded, message: "no connection within the deadline"))
        } catch {
            throw AttemptFailure(self.isClosed ? .notSent : .connectFailed, Self.wrap(error))
        }
        do {
            return try await self.call(method, bytes, as: Response.self, timeout: timeout, on: connection)
        } catch {
            let error = Self.wrap(error)
            if error.cause is NotSent { throw AttemptFailure(.notSent, error) }
            if error.cause is ConnectionLost { throw AttemptFailure(.connectionLost, error) }
            // No cause: the server's own ERROR frame.
            if error.code == .unavailable && error.cause == nil { throw AttemptFailure(.unavailable, error) }
            throw AttemptFailure(.final, error)
        }
    }

    /// `future`'s value, failing with ``WaitExpired`` once `timeout` has passed.
    package static func wait<Value: Sendable>(for future: EventLoopFuture<Value>, within timeout: Duration?)
        async throws -> Value
    {
        guard let timeout else { return try await future.get() }
        let loop = future.eventLoop
        let promise = loop.makePromise(of: Value.self)
        // Whichever completes the promise first wins; NIO ignores the later completion.
        future.cascade(to: promise)
        let timer = loop.scheduleTask(in: .nanoseconds(max(0, timeout.inNanoseconds))) {
            promise.fail(WaitExpired())
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return try await promise.futureResult.get()
    }

    /// Whether a wait ended by ``wait(for:within:)``'s timeout.
    package static func waitExpired(_ error: any Error) -> Bool { error is WaitExpired }

    /// Whether a call that failed with `error` on `connection` certainly did not run.
    private static func neverRan(_ error: InferWireError, on connection: ClientConnection) -> Bool {
        if error.cause is NotSent { return true }
        // The server's own UNAVAILABLE (no cause: it came in an ERROR frame) after its GOAWAY; a call
        // lost with its connection carries ConnectionLost and may have run.
        return error.code == .unavailable && error.cause == nil && !connection.status.isAccepting
    }

    private func call<Response: Message>(
        _ method: Inferwire_V1_Method, _ bytes: [UInt8], as: Response.Type, timeout: Duration?,
        on connection: ClientConnection
    ) async throws -> Response {
        guard bytes.count <= connection.hello.maxFrameSize else {
            throw InferWireError(
                code: .resourceExhausted,
                message:
                    "request of \(bytes.count) bytes exceeds the server's \(connection.hello.maxFrameSize)-byte frame limit"
            )
        }
        let allocator = connection.channel.allocator
        // The request id is filled in on the event loop, which knows which ids are free.
        let frame = Frame.request(
            method: UInt16(method.rawValue), payload: bytes, timeout: timeout,
            compression: self.configuration.compression,
            allocator: allocator)

        let loop = connection.channel.eventLoop
        let promise = loop.makePromise(of: Frame.self)
        let handler = connection.handler
        let timeAmount = timeout.map { TimeAmount.nanoseconds($0.inNanoseconds) }
        loop.execute { handler.value.start(frame: frame, timeout: timeAmount, promise: promise) }

        let answer: Frame
        do {
            answer = try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                let future = ObjectIdentifier(promise.futureResult)
                loop.execute {
                    handler.value.abandon(
                        future: future, InferWireError(code: .cancelled, message: "cancelled by the caller"))
                }
            }
        } catch {
            throw Self.wrap(error)
        }

        var payload = answer.payload
        if answer.header.flags.contains(.compressed) {
            do {
                payload = try PayloadCompression.decompress(
                    payload, limit: self.configuration.maxFrameSize, allocator: allocator)
            } catch {
                throw InferWireError(
                    code: error.kind == .tooLarge ? .resourceExhausted : .internal,
                    message: "server sent a bad compressed payload: \(error.message)", cause: error)
            }
        }
        let payloadBytes = [UInt8](buffer: payload)
        if answer.header.type == .error {
            let status = (try? Inferwire_V1_Status(serializedBytes: payloadBytes)) ?? Inferwire_V1_Status()
            throw InferWireError(status: status)
        }
        do {
            return try Response(serializedBytes: payloadBytes)
        } catch {
            throw InferWireError(
                code: .internal, message: "server sent a malformed \(Response.protoMessageName): \(error)", cause: error
            )
        }
    }

    static func wrap(_ error: any Error) -> InferWireError {
        if let error = error as? InferWireError { return error }
        if let failure = error as? AttemptFailure { return failure.error }
        return InferWireError(code: .unavailable, message: ConnectFailure.describe(error), cause: error)
    }
}

/// The outputs of one inference.
public struct InferResult: Sendable {
    public var modelName: String
    /// The version that computed the outputs.
    public var modelVersion: Int64
    public var outputs: [Tensor]

    /// The output with this name.
    public subscript(name: String) -> Tensor? {
        self.outputs.first { $0.name == name }
    }
}
