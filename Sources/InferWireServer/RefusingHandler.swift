import InferWireCore
import InferWireProto
import InferWireWire
import NIOCore
import NIOSSL
import NIOTLS

/// Answers a connection the server will not serve (over a connection limit) with GOAWAY
/// naming the reason, and closes it: a client reads why instead of seeing a bare reset.
/// On a TLS port the GOAWAY goes out once the handshake is done, inside TLS, where the
/// client can read it.
final class RefusingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let code: InferWireError.Code
    let reason: String
    let waitsForTLS: Bool

    init(code: InferWireError.Code = .resourceExhausted, reason: String, waitsForTLS: Bool) {
        self.code = code
        self.reason = reason
        self.waitsForTLS = waitsForTLS
    }

    /// How long a refused TLS connection may take to finish its handshake and read why.
    static let tlsGrace = TimeAmount.seconds(10)

    func handlerAdded(context: ChannelHandlerContext) {
        if !self.waitsForTLS && context.channel.isActive { self.refuse(context: context) }
        if self.waitsForTLS {
            // A peer that never completes the handshake must not keep the socket.
            let channel = context.channel
            context.eventLoop.scheduleTask(in: Self.tlsGrace) { channel.close(promise: nil) }
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        if !self.waitsForTLS { self.refuse(context: context) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { self.refuse(context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private var refused = false

    private func refuse(context: ChannelHandlerContext) {
        guard !self.refused else { return }
        self.refused = true
        Self.sendGoAway(code: self.code, message: self.reason, context: context)
    }

    /// Writes GOAWAY with `code` and `message` from `context` and closes the channel.
    static func sendGoAway(code: InferWireError.Code, message: String, context: ChannelHandlerContext) {
        var goAway = Inferwire_V1_GoAway()
        goAway.code = code.wire
        goAway.message = message
        let bytes: [UInt8] = (try? goAway.serializedBytes()) ?? []
        let frame = Frame.encode(
            FrameHeader(payloadLength: 0, type: .goAway), bytes: bytes, allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(NIOAny(frame)).whenComplete { _ in channel.close(promise: nil) }
    }
}
