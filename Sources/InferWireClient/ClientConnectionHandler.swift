import DequeModule
import InferWireCore
package import InferWireProto
import InferWireWire
import NIOCore
import Synchronization

/// The client side of one connection, on its event loop: writes the preface, waits
/// for HELLO, assigns request ids, matches RESPONSE/ERROR frames to callers by id,
/// and holds calls back locally beyond the server's `max_concurrent_requests`.
/// Whether a connection still takes new requests, readable from any thread: the client
/// opens a new connection for its next call once this turns false.
final class ConnectionStatus: Sendable {
    private let accepting = Atomic<Bool>(true)

    var isAccepting: Bool { self.accepting.load(ordering: .acquiring) }

    func stopAccepting() { self.accepting.store(false, ordering: .releasing) }
}

/// The cause of a call's failure when it never reached the server: safe to send again.
struct NotSent: Error {}

/// The cause of a call's failure when its connection ended while it was in flight: the server
/// may have run it (PROTOCOL.md section 5), so only an idempotent call may be sent again.
struct ConnectionLost: Error {}

final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        /// nil once the caller stopped waiting (cancelled, timed out); the id stays
        /// reserved until the server's final frame for it arrives.
        var promise: EventLoopPromise<Frame>?
        var timer: Scheduled<Void>?
    }

    private struct Queued {
        var frame: ByteBuffer
        var promise: EventLoopPromise<Frame>
        var timer: Scheduled<Void>?
    }

    private let helloPromise: EventLoopPromise<(Inferwire_V1_Hello, Inferwire_V1_Principal?)>
    private var handshake: ClientHandshake
    private var hello: Inferwire_V1_Hello? { self.handshake.hello }
    private var pending: [UInt32: Pending] = [:]
    /// Calls waiting for a free slot under the server's concurrency limit.
    private var queued = Deque<Queued>()
    /// The id of each call by its future, so the caller can cancel without knowing the id.
    private var idsByFuture: [ObjectIdentifier: UInt32] = [:]
    private var lastID: UInt32 = 0
    private var pingPromises: [UInt64: EventLoopPromise<Void>] = [:]
    /// Set once the connection accepts no new requests, with the reason.
    private var refusal: InferWireError?
    private var context: ChannelHandlerContext?

    let status: ConnectionStatus

    init(
        helloPromise: EventLoopPromise<(Inferwire_V1_Hello, Inferwire_V1_Principal?)>, bearerToken: String?,
        status: ConnectionStatus
    ) {
        self.helloPromise = helloPromise
        self.handshake = ClientHandshake(bearerToken: bearerToken)
        self.status = status
    }

    /// `error`, marked as never sent.
    private static func notSent(_ error: InferWireError) -> InferWireError {
        InferWireError(code: error.code, message: error.message, cause: NotSent())
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

    private func sendPreface(context: ChannelHandlerContext) {
        guard let preface = self.handshake.preface(allocator: context.channel.allocator) else { return }
        context.writeAndFlush(self.wrapOutboundOut(preface), promise: nil)
    }

    // MARK: Calls (on the event loop)

    /// Sends one encoded REQUEST frame (its request id is filled in here) or queues it
    /// while the server's concurrency limit is reached.
    func start(frame: ByteBuffer, timeout: TimeAmount?, promise: EventLoopPromise<Frame>) {
        guard let context = self.context, self.refusal == nil else {
            promise.fail(
                Self.notSent(self.refusal ?? InferWireError(code: .unavailable, message: "connection is closed")))
            return
        }
        var timer: Scheduled<Void>?
        if let timeout {
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let future = ObjectIdentifier(promise.futureResult)
            timer = context.eventLoop.scheduleTask(in: timeout) {
                handler.value.abandon(
                    future: future, InferWireError(code: .deadlineExceeded, message: "no answer within the deadline"))
            }
        }
        let limit = Int(self.hello?.maxConcurrentRequests ?? 0)
        if limit > 0, self.pending.count >= limit {
            self.queued.append(Queued(frame: frame, promise: promise, timer: timer))
            return
        }
        self.send(frame: frame, promise: promise, timer: timer, context: context)
    }

    private func send(
        frame: ByteBuffer, promise: EventLoopPromise<Frame>, timer: Scheduled<Void>?, context: ChannelHandlerContext
    ) {
        // Next id that is neither 0 nor still in flight.
        var id = self.lastID
        repeat { id &+= 1 } while id == 0 || self.pending[id] != nil
        self.lastID = id
        var frame = frame
        Frame.setRequestID(id, in: &frame)
        self.pending[id] = Pending(promise: promise, timer: timer)
        self.idsByFuture[ObjectIdentifier(promise.futureResult)] = id
        context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
    }

    /// The caller stopped waiting: fail it now and tell the server.
    func abandon(future: ObjectIdentifier, _ error: InferWireError) {
        if let index = self.queued.firstIndex(where: { ObjectIdentifier($0.promise.futureResult) == future }) {
            let call = self.queued.remove(at: index)
            call.timer?.cancel()
            call.promise.fail(error)
            return
        }
        guard let id = self.idsByFuture.removeValue(forKey: future), let promise = self.pending[id]?.promise else {
            return
        }
        self.pending[id]?.promise = nil
        self.pending[id]?.timer?.cancel()
        promise.fail(error)
        if let context = self.context, context.channel.isActive {
            let cancel = Frame.encode(
                FrameHeader(payloadLength: 0, type: .cancel, requestID: id), payload: nil,
                allocator: context.channel.allocator)
            context.writeAndFlush(self.wrapOutboundOut(cancel), promise: nil)
        }
    }

    func ping(token: UInt64, timeout: TimeAmount, promise: EventLoopPromise<Void>) {
        guard let context = self.context, context.channel.isActive else {
            promise.fail(InferWireError(code: .unavailable, message: "connection is closed"))
            return
        }
        self.pingPromises[token] = promise
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let timer = context.eventLoop.scheduleTask(in: timeout) {
            handler.value.pingPromises.removeValue(forKey: token)?.fail(
                InferWireError(code: .deadlineExceeded, message: "no PONG within the timeout"))
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        var payload = context.channel.allocator.buffer(capacity: 8)
        payload.writeInteger(token)
        let frame = Frame.encode(
            FrameHeader(payloadLength: 0, type: .ping), payload: payload, allocator: context.channel.allocator)
        context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .frame(let frame):
            self.receive(frame, context: context)
        case .oversized(let header):
            if header.type == .response || header.type == .error, header.requestID != 0 {
                self.finish(
                    id: header.requestID,
                    with: .failure(
                        InferWireError(
                            code: .resourceExhausted,
                            message: "response of \(header.payloadLength) bytes exceeds this client's frame limit")))
            } else {
                self.failConnection(
                    InferWireError(
                        code: .resourceExhausted,
                        message: "server sent a \(header.type) frame of \(header.payloadLength) bytes"),
                    context: context)
            }
        case .preface, .httpRequest:
            break  // only a server decoder produces these
        }
    }

    private func receive(_ frame: Frame, context: ChannelHandlerContext) {
        switch self.handshake.receive(frame) {
        case .established(let hello, let principal)?:
            self.helloPromise.succeed((hello, principal))
            return
        case .failed(let code, let message)?:
            let error = InferWireError(code: .init(code), message: message)
            self.helloPromise.fail(error)
            self.failConnection(error, context: context)
            return
        case nil:
            break
        }
        switch frame.header.type {
        case .hello:
            break  // a second HELLO changes nothing
        case .response, .error:
            self.finish(id: frame.header.requestID, with: .success(frame))
        case .goAway:
            // No new requests; those already sent are answered, or fail when the connection closes.
            let goAway = ClientHandshake.goAway(in: frame)
            var error = InferWireError(code: .init(goAway.code), message: "server sent GOAWAY: \(goAway.message)")
            if goAway.code == .ok { error.code = .unavailable }
            self.refusal = error
            self.status.stopAccepting()
            if !self.handshake.isEstablished { self.helloPromise.fail(error) }
            while let call = self.queued.popFirst() {
                call.timer?.cancel()
                call.promise.fail(
                    Self.notSent(InferWireError(code: .unavailable, message: "not sent: \(error.message)")))
            }
        case .ping:
            let pong = Frame.encode(
                FrameHeader(payloadLength: 0, type: .pong), payload: frame.payload, allocator: context.channel.allocator
            )
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
        if let promise = entry.promise {
            self.idsByFuture.removeValue(forKey: ObjectIdentifier(promise.futureResult))
            switch result {
            case .success(let frame): promise.succeed(frame)
            case .failure(let error): promise.fail(error)
            }
        }
        // A slot under the server's limit is free: send the next queued call.
        if let context = self.context, self.refusal == nil, let next = self.queued.popFirst() {
            self.send(frame: next.frame, promise: next.promise, timer: next.timer, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error =
            self.refusal.map { InferWireError(code: .unavailable, message: "connection closed after \($0.message)") }
            ?? InferWireError(code: .unavailable, message: "connection closed by the server")
        self.refusal = self.refusal ?? error
        self.status.stopAccepting()
        if !self.handshake.isEstablished { self.helloPromise.fail(error) }
        while let call = self.queued.popFirst() {
            call.timer?.cancel()
            call.promise.fail(Self.notSent(error))
        }
        let lost = InferWireError(code: error.code, message: error.message, cause: ConnectionLost())
        for id in Array(self.pending.keys) { self.finish(id: id, with: .failure(lost)) }
        for (_, promise) in self.pingPromises { promise.fail(error) }
        self.pingPromises.removeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let failure: InferWireError
        if let tls = ConnectFailure.describeTLS(error) {
            failure = InferWireError(code: .unavailable, message: tls, cause: error)
        } else {
            failure = InferWireError(
                code: .unavailable, message: "connection failed: \(ConnectFailure.describe(error))", cause: error)
        }
        if !self.handshake.isEstablished { self.helloPromise.fail(failure) }
        self.failConnection(failure, context: context)
    }

    private func failConnection(_ error: InferWireError, context: ChannelHandlerContext) {
        self.refusal = self.refusal ?? error
        self.status.stopAccepting()
        context.close(promise: nil)
    }
}
