import InferWireCore
import InferWireProto
import InferWireWire
import NIOCore

/// The client side of one connection, on its event loop: writes the preface, waits
/// for HELLO, matches RESPONSE/ERROR frames to callers by request id.
final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        /// nil once the caller stopped waiting (cancelled, timed out); the id stays
        /// reserved until the server's final frame for it arrives.
        var promise: EventLoopPromise<Frame>?
        var timer: Scheduled<Void>?
    }

    private let helloPromise: EventLoopPromise<Inferwire_V1_Hello>
    private var helloReceived = false
    private var pending: [UInt32: Pending] = [:]
    private var pingPromises: [UInt64: EventLoopPromise<Void>] = [:]
    /// Set once the connection accepts no new requests, with the reason.
    private var refusal: InferWireError?
    private var context: ChannelHandlerContext?

    init(helloPromise: EventLoopPromise<Inferwire_V1_Hello>) {
        self.helloPromise = helloPromise
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { self.sendPreface(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.sendPreface(context: context)
        context.fireChannelActive()
    }

    private var prefaceSent = false
    private func sendPreface(context: ChannelHandlerContext) {
        guard !self.prefaceSent else { return }
        self.prefaceSent = true
        var buffer = context.channel.allocator.buffer(capacity: Preface.size)
        Preface().write(to: &buffer)
        context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
    }

    // MARK: Calls (on the event loop)

    /// Sends one encoded REQUEST frame and registers its promise.
    func start(id: UInt32, frame: ByteBuffer, timeout: TimeAmount?, promise: EventLoopPromise<Frame>) {
        guard let context = self.context, self.refusal == nil else {
            promise.fail(self.refusal ?? InferWireError(code: .unavailable, message: "connection is closed"))
            return
        }
        guard self.pending[id] == nil else {
            promise.fail(InferWireError(code: .resourceExhausted, message: "request id \(id) is still in flight (ids wrapped)"))
            return
        }
        var entry = Pending(promise: promise, timer: nil)
        if let timeout {
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            entry.timer = context.eventLoop.scheduleTask(in: timeout) {
                handler.value.abandon(id: id, InferWireError(code: .deadlineExceeded, message: "no answer within the deadline"))
            }
        }
        self.pending[id] = entry
        context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
    }

    /// The caller stopped waiting: fail it now and tell the server.
    func abandon(id: UInt32, _ error: InferWireError) {
        guard let promise = self.pending[id]?.promise else { return }
        self.pending[id]?.promise = nil
        self.pending[id]?.timer?.cancel()
        promise.fail(error)
        if let context = self.context, context.channel.isActive {
            let cancel = Frame.encode(FrameHeader(payloadLength: 0, type: .cancel, requestID: id), payload: nil, allocator: context.channel.allocator)
            context.writeAndFlush(self.wrapOutboundOut(cancel), promise: nil)
        }
    }

    func ping(token: UInt64, promise: EventLoopPromise<Void>) {
        guard let context = self.context, context.channel.isActive else {
            promise.fail(InferWireError(code: .unavailable, message: "connection is closed"))
            return
        }
        self.pingPromises[token] = promise
        var payload = context.channel.allocator.buffer(capacity: 8)
        payload.writeInteger(token)
        let frame = Frame.encode(FrameHeader(payloadLength: 0, type: .ping), payload: payload, allocator: context.channel.allocator)
        context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .frame(let frame):
            self.receive(frame, context: context)
        case .oversized(let header):
            if header.type == .response || header.type == .error, header.requestID != 0 {
                self.finish(id: header.requestID, with: .failure(InferWireError(code: .resourceExhausted, message: "response of \(header.payloadLength) bytes exceeds this client's frame limit")))
            } else {
                self.failConnection(InferWireError(code: .resourceExhausted, message: "server sent a \(header.type) frame of \(header.payloadLength) bytes"), context: context)
            }
        case .preface, .httpRequest:
            break  // only a server decoder produces these
        }
    }

    private func receive(_ frame: Frame, context: ChannelHandlerContext) {
        switch frame.header.type {
        case .hello:
            do {
                let hello = try Inferwire_V1_Hello(serializedBytes: [UInt8](buffer: frame.payload))
                self.helloReceived = true
                self.helloPromise.succeed(hello)
            } catch {
                self.failConnection(InferWireError(code: .internal, message: "server sent a malformed HELLO: \(error)"), context: context)
            }
        case .response, .error:
            self.finish(id: frame.header.requestID, with: .success(frame))
        case .goAway:
            let goAway = (try? Inferwire_V1_GoAway(serializedBytes: [UInt8](buffer: frame.payload))) ?? Inferwire_V1_GoAway()
            var error = InferWireError(code: .init(goAway.code), message: "server sent GOAWAY: \(goAway.message)")
            if goAway.code == .ok { error.code = .unavailable }
            self.refusal = error
            if !self.helloReceived { self.helloPromise.fail(error) }
            // Requests above last_request_id were not processed.
            for id in self.pending.keys where id > goAway.lastRequestID {
                self.finish(id: id, with: .failure(InferWireError(code: .unavailable, message: "not processed: \(error.message)")))
            }
        case .ping:
            let pong = Frame.encode(FrameHeader(payloadLength: 0, type: .pong), payload: frame.payload, allocator: context.channel.allocator)
            context.writeAndFlush(self.wrapOutboundOut(pong), promise: nil)
        case .pong:
            if let token = frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt64.self) {
                self.pingPromises.removeValue(forKey: token)?.succeed()
            }
        default:
            break  // unknown types from a newer server are ignored
        }
    }

    private func finish(id: UInt32, with result: Result<Frame, InferWireError>) {
        guard let entry = self.pending.removeValue(forKey: id) else { return }
        entry.timer?.cancel()
        switch result {
        case .success(let frame): entry.promise?.succeed(frame)
        case .failure(let error): entry.promise?.fail(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error = self.refusal.map { InferWireError(code: .unavailable, message: "connection closed after \($0.message)") }
            ?? InferWireError(code: .unavailable, message: "connection closed by the server")
        self.refusal = self.refusal ?? error
        if !self.helloReceived { self.helloPromise.fail(error) }
        for id in Array(self.pending.keys) { self.finish(id: id, with: .failure(error)) }
        for (_, promise) in self.pingPromises { promise.fail(error) }
        self.pingPromises.removeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failConnection(InferWireError(code: .unavailable, message: "connection failed: \(error)", cause: error), context: context)
    }

    private func failConnection(_ error: InferWireError, context: ChannelHandlerContext) {
        self.refusal = self.refusal ?? error
        context.close(promise: nil)
    }
}
