public import InferWireCore
package import InferWireProto
import InferWireWire
import NIOCore
import NIOPosix
import NIOSSL

/// One established connection of an ``InferWireClient``: its channel, handler, and what the
/// server said in the handshake.
struct ClientConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<ClientConnectionHandler>
    let hello: ServerHello
    let principal: Principal?
    let status: ConnectionStatus

    /// Connects, sends the preface (and AUTH), and completes once the handshake has; failures
    /// are ``InferWireError``s that say what went wrong. Built from futures so that a
    /// reconnection needs no task of its own.
    static func open(
        host: String, port: Int, configuration: InferWireClient.Configuration, group: any EventLoopGroup
    ) -> EventLoopFuture<ClientConnection> {
        let loop = group.next()
        let tlsContext: NIOSSLContext?
        do {
            tlsContext = try configuration.tls.map { tls throws(InferWireError) in try tls.makeContext() }
        } catch {
            return loop.makeFailedFuture(error)
        }
        let helloPromise = loop.makePromise(of: (Inferwire_V1_Hello, Inferwire_V1_Principal?).self)
        let status = ConnectionStatus()
        let maxFrameSize = configuration.maxFrameSize
        let bearerToken = configuration.bearerToken
        let serverHostname = configuration.tls?.serverHostname(for: host)
        let connectTimeout = TimeAmount.nanoseconds(configuration.connectTimeout.inNanoseconds)
        return ClientBootstrap(group: loop)
            .connectTimeout(connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(maxPayloadSize: maxFrameSize, expectPreface: false)))
                    try channel.pipeline.syncOperations.addHandler(
                        ClientConnectionHandler(helloPromise: helloPromise, bearerToken: bearerToken, status: status))
                }
            }
            .connect(host: host, port: port)
            .flatMapError { error in
                helloPromise.fail(error)
                return loop.makeFailedFuture(
                    InferWireError(
                        code: .unavailable,
                        message:
                            "cannot connect to \(host):\(port): \(ConnectFailure.describe(error, timeout: configuration.connectTimeout))",
                        cause: error))
            }
            .flatMap { channel in
                let timeout = loop.scheduleTask(in: connectTimeout) {
                    helloPromise.fail(
                        InferWireError(
                            code: .deadlineExceeded, message: "no HELLO from \(host):\(port) within the connect timeout"
                        ))
                }
                return helloPromise.futureResult
                    .always { _ in timeout.cancel() }
                    .flatMapError { error in
                        channel.close(promise: nil)
                        return loop.makeFailedFuture(InferWireClient.wrap(error))
                    }
                    .flatMapThrowing { hello, principal in
                        let handler = try channel.pipeline.syncOperations.handler(type: ClientConnectionHandler.self)
                        return ClientConnection(
                            channel: channel, handler: NIOLoopBound(handler, eventLoop: loop),
                            hello: ServerHello(hello),
                            principal: principal.map(Principal.init), status: status)
                    }
            }
    }
}
