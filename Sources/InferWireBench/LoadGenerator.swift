public import InferWireClient
public import InferWireCore
package import InferWireProto
import InferWireWire
public import NIOCore
import NIOPosix
import NIOSSL

/// A connected generator connection.
struct LoadConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<LoadHandler>
    let hello: Inferwire_V1_Hello
    let server: String

    static func connect(
        host: String, port: Int, template: ByteBuffer, maxResponseSize: Int, security: ConnectionSecurity,
        group: any EventLoopGroup
    ) async throws -> LoadConnection {
        let loop = group.next()
        let helloPromise = loop.makePromise(of: Inferwire_V1_Hello.self)
        let tlsContext = security.tlsContext
        let serverHostname = security.tls?.serverHostname(for: host)
        let bearerToken = security.bearerToken
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(.seconds(5))
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tlsContext {
                            try channel.pipeline.syncOperations.addHandler(
                                try NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(FrameDecoder(maxPayloadSize: maxResponseSize, expectPreface: false)))
                        try channel.pipeline.syncOperations.addHandler(
                            LoadHandler(
                                template: template, maxResponseSize: maxResponseSize, helloPromise: helloPromise,
                                bearerToken: bearerToken))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            helloPromise.fail(error)
            throw InferWireError(
                code: .unavailable, message: "cannot connect to \(host):\(port): \(error)", cause: error)
        }
        let timeout = loop.scheduleTask(in: .seconds(5)) {
            helloPromise.fail(
                InferWireError(code: .deadlineExceeded, message: "no HELLO from \(host):\(port) within 5 s"))
        }
        defer { timeout.cancel() }
        let hello: Inferwire_V1_Hello
        do {
            hello = try await helloPromise.futureResult.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
        let handler = try await loop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: LoadHandler.self), eventLoop: loop)
        }.get()
        return LoadConnection(channel: channel, handler: handler, hello: hello, server: "\(host):\(port)")
    }
}

/// How generator connections reach a server: TLS and credentials.
public struct ConnectionSecurity: Sendable {
    /// TLS to the server; nil: plaintext.
    public var tls: InferWireClient.Configuration.TLS?
    /// Credentials for the AUTH frame (PROTOCOL.md section 1b).
    public var bearerToken: String?
    /// The TLS context, made once for every connection.
    let tlsContext: NIOSSLContext?

    public init(tls: InferWireClient.Configuration.TLS? = nil, bearerToken: String? = nil) throws(InferWireError) {
        self.tls = tls
        self.bearerToken = bearerToken
        self.tlsContext = try tls?.makeContext()
    }

    /// Plaintext, no credentials.
    public static var plaintext: ConnectionSecurity { try! ConnectionSecurity() }
}

/// The generator's connections, driven together: start a load shape on all of them,
/// collect their tallies window by window, stop and drain.
public final class LoadGenerator: Sendable {
    let connections: [LoadConnection]

    /// Opens `connectionsPerServer` connections to each server. Each sends the same inference
    /// request: `inputs` to `model` (an exact `version`, a `label`, or neither to let the
    /// server route); with `compression` the payload is zlib-compressed and compressed
    /// answers are asked for.
    public static func connect(
        servers: [(host: String, port: Int)], connectionsPerServer: Int,
        model: String, version: Int64? = nil, label: String? = nil, inputs: [Tensor],
        compression: Bool, security: ConnectionSecurity = .plaintext,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> LoadGenerator {
        var request = Inferwire_V1_InferRequest()
        request.modelName = model
        if let version { request.version.version = version } else if let label { request.version.label = label }
        request.inputs = inputs.map(\.wire)
        return try await self.connect(
            servers: servers, connectionsPerServer: connectionsPerServer, request: request, compression: compression,
            security: security, group: group)
    }

    /// Opens the connections with a request message built by the caller.
    package static func connect(
        servers: [(host: String, port: Int)], connectionsPerServer: Int, request: Inferwire_V1_InferRequest,
        compression: Bool, security: ConnectionSecurity = .plaintext,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> LoadGenerator {
        let bytes: [UInt8] = try request.serializedBytes()
        let template = Frame.request(
            method: UInt16(Inferwire_V1_Method.infer.rawValue), payload: bytes, timeout: nil, compression: compression,
            allocator: ByteBufferAllocator())
        var connections: [LoadConnection] = []
        do {
            for server in servers {
                for _ in 0..<max(1, connectionsPerServer) {
                    let connection = try await LoadConnection.connect(
                        host: server.host, port: server.port, template: template, maxResponseSize: 64 << 20,
                        security: security, group: group)
                    guard template.readableBytes - FrameHeader.size <= Int(connection.hello.maxFrameSize) else {
                        connection.channel.close(promise: nil)
                        throw InferWireError(
                            code: .resourceExhausted,
                            message: "the request of \(bytes.count) bytes exceeds \(connection.server)'s frame limit")
                    }
                    connections.append(connection)
                }
            }
        } catch {
            for c in connections { c.channel.close(promise: nil) }
            throw error
        }
        return LoadGenerator(connections: connections)
    }

    init(connections: [LoadConnection]) {
        self.connections = connections
    }

    public var connectionCount: Int { self.connections.count }

    /// Event-loop threads the connections run on (each drives its sends on one of them).
    public var loopCount: Int { Set(self.connections.map { ObjectIdentifier($0.channel.eventLoop) }).count }

    /// The smallest per-connection concurrency limit the servers announced (0: none).
    public var serverConcurrencyLimit: Int {
        self.connections.map { Int($0.hello.maxConcurrentRequests) }.filter { $0 > 0 }.min() ?? 0
    }

    /// Part `index` of `total` split as evenly as whole numbers allow over `parts`.
    static func share(of total: Int, index: Int, over parts: Int) -> Int {
        total / parts + (index < total % parts ? 1 : 0)
    }

    /// Keeps `concurrency` requests in flight in total, spread evenly over the connections.
    public func startClosed(concurrency: Int) async throws {
        let n = self.connections.count
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, c) in self.connections.enumerated() {
                let share = Self.share(of: concurrency, index: i, over: n)
                guard share > 0 else { continue }
                group.addTask {
                    try await c.channel.eventLoop.submit { c.handler.value.startClosed(inFlight: share) }.get()
                }
            }
            try await group.waitForAll()
        }
    }

    /// Sends `rate` requests per second in total. Each connection runs its own share of the
    /// schedule from the same start time (Poisson streams with distinct seeds add up to a
    /// Poisson stream; evenly spaced streams are offset so their union stays even).
    public func startOpen(rate: Double, poisson: Bool, seed: UInt64, maxInFlight: Int) async throws {
        let n = self.connections.count
        let start = NIODeadline.now().uptimeNanoseconds + 1_000_000
        let perConnection = rate / Double(n)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, c) in self.connections.enumerated() {
                let arrivals = ArrivalSchedule(
                    rate: perConnection, poisson: poisson, seed: seed &+ UInt64(i) &* 0x9E37_79B9)
                let offset = poisson ? 0 : UInt64(Double(i) / rate * 1e9)
                let cap = max(1, maxInFlight / n)
                group.addTask {
                    try await c.channel.eventLoop.submit {
                        c.handler.value.startOpen(arrivals: arrivals, firstDue: start + offset, maxInFlight: cap)
                    }.get()
                }
            }
            try await group.waitForAll()
        }
    }

    /// Closed loop: from now on, count `answers` more answers in total (spread like the
    /// concurrency) and stop sending once they are covered. Returns what was measured before,
    /// like ``collect()``.
    public func limit(answers: Int, concurrency: Int) async throws -> WindowTally {
        let n = self.connections.count
        let active = max(1, min(n, concurrency))
        return try await withThrowingTaskGroup(of: WindowTally.self) { group in
            for (i, c) in self.connections.enumerated() {
                let share = i < active ? Self.share(of: answers, index: i, over: active) : 0
                group.addTask { try await c.channel.eventLoop.submit { c.handler.value.limit(answers: share) }.get() }
            }
            var total = WindowTally()
            for try await tally in group { total.merge(tally) }
            return total
        }
    }

    /// When every connection's answer budget was spent (uptime ns, NIODeadline's clock), or
    /// nil while some connection still has answers to count.
    public func budgetSpentAt() async -> UInt64? {
        var latest: UInt64 = 0
        for c in self.connections {
            let (spent, at) =
                (try? await c.channel.eventLoop.submit({ (c.handler.value.budgetSpent, c.handler.value.budgetSpentAt) })
                    .get()) ?? (true, nil)
            guard spent else { return nil }
            latest = max(latest, at ?? 0)
        }
        return latest
    }

    /// Stops sending and waits (at most `timeout`) for the requests in flight to be answered.
    /// Returns how many were still unanswered at the timeout (and are now given up on).
    public func stop(timeout: Duration = .seconds(10)) async -> Int {
        await withTaskGroup(of: Int.self) { group in
            for c in self.connections {
                group.addTask {
                    let loop = c.channel.eventLoop
                    let promise = loop.makePromise(of: Void.self)
                    loop.execute { c.handler.value.stop(promise: promise) }
                    let limit = loop.scheduleTask(in: .nanoseconds(timeout.inNanoseconds)) { promise.succeed() }
                    try? await promise.futureResult.get()
                    limit.cancel()
                    return (try? await loop.submit { c.handler.value.forgetPending() }.get()) ?? 0
                }
            }
            return await group.reduce(0, +)
        }
    }

    /// Everything measured since the last collection, over all connections.
    public func collect() async -> WindowTally {
        await withTaskGroup(of: WindowTally?.self) { group in
            for c in self.connections {
                group.addTask { try? await c.channel.eventLoop.submit { c.handler.value.collect() }.get() }
            }
            var total = WindowTally()
            for await tally in group { if let tally { total.merge(tally) } }
            return total
        }
    }

    /// Why connections stopped taking requests, if any did.
    public func refusals() async -> [String] {
        var reasons: [String] = []
        for c in self.connections {
            if let reason = try? await c.channel.eventLoop.submit({ c.handler.value.refusal }).get() {
                reasons.append("\(c.server): \(reason)")
            }
        }
        return reasons
    }

    public func close() async {
        for c in self.connections { try? await c.channel.close() }
    }
}
