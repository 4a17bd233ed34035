import Foundation
import InferWireAuth
import InferWireCore
import InferWireEngine
import InferWireProto
import InferWireWire
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization

/// The server side of one InferWire connection, on its event loop.
///
/// It answers the preface, dispatches REQUEST frames, writes RESPONSE/ERROR frames
/// as results complete (in any order), honours CANCEL and PING, and drains on
/// GOAWAY or shutdown. Every protocol decision is made by its ``StateMachine``; the
/// handler performs the actions. The request path stays in this handler rather than
/// crossing into async code: an async hop per request costs more than the whole round
/// trip of a small model (docs/DESIGN.md).
///
/// It decodes frames itself (a `FrameDecoder` driven by a single-step processor)
/// rather than behind a `ByteToMessageHandler`: that saves a pipeline hop and a boxed
/// `NIOAny` per frame.
///
/// Writes made while reading a burst of frames are flushed once, in
/// `channelReadComplete`; results that complete later are flushed as they come.
/// While the socket cannot take more output the handler stops reading, so a peer
/// that sends without reading cannot grow the server's memory.
final class ServerConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// How long a closing connection waits for the peer's FIN after shutting its own
    /// output, so the last frames are not destroyed by a reset.
    static let lingerTime = TimeAmount.seconds(1)

    private let dispatcher: RequestDispatcher
    private let limits: InferWireServer.Configuration.Limits
    private var logger: Logger
    /// Where connections closed for bad behaviour are logged, at most a line per interval.
    private let rejections: RateLimitedLog
    private var handshakeTimer: Scheduled<Void>?
    private var idleTimer: RepeatedTask?
    private let frames: NIOSingleStepByteToMessageProcessor<FrameDecoder>
    private var state: StateMachine
    private var context: ChannelHandlerContext?
    /// Results completed on other threads, delivered to the event loop in one hop per
    /// burst (a batch of N requests costs one task and one flush, not N).
    private let inbox = CompletionInbox()
    /// Where AUTH credentials are checked; nil when the server requires none.
    private let credentialChecks: CredentialChecks?
    /// Frames read while an AUTH was under check, acted on once it is decided.
    private var heldFrames: [InboundFrame] = []
    private var expiryTimer: Scheduled<Void>?
    /// Armed while a frame is partly read; see ``InferWireServer/Configuration/Limits/frameStallTimeout``.
    private var stallTimer: Scheduled<Void>?
    /// When bytes of a partly read frame last arrived.
    private var lastProgress = NIODeadline.now()
    /// Small frames written since the last flush, as one buffer (see ``coalescingLimit``).
    private var coalesced: ByteBuffer?
    /// The methods this listener serves.
    private let services: InferWireServer.Configuration.Services
    /// The listener's byte and in-flight counts; nil when it keeps none.
    private let traffic: ListenerTraffic?
    /// Bytes read and written since they were last added to ``traffic``.
    private var unreportedBytesIn = 0
    private var unreportedBytesOut = 0
    /// Whether dispatched requests carry this connection's logger for the access log.
    private let logsAccess: Bool

    /// The largest AUTH payload read: a bearer token, even a JWT with many claims, is far smaller.
    static let maxAuthPayload = 16 * 1024

    init(
        dispatcher: RequestDispatcher, limits: InferWireServer.Configuration.Limits, logger: Logger,
        rejections: RateLimitedLog, credentialChecks: CredentialChecks? = nil,
        services: InferWireServer.Configuration.Services = .all, traffic: ListenerTraffic? = nil,
        logsAccess: Bool = false
    ) {
        self.dispatcher = dispatcher
        self.traffic = traffic
        self.logsAccess = logsAccess
        self.limits = limits
        self.logger = logger
        self.rejections = rejections
        self.credentialChecks = credentialChecks
        self.services = services
        self.frames = NIOSingleStepByteToMessageProcessor(
            FrameDecoder(maxPayloadSize: limits.maxFrameSize, expectPreface: true))
        self.state = StateMachine(
            maxConcurrentRequests: limits.maxConcurrentRequests, authenticationRequired: credentialChecks != nil)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let remote = context.channel.remoteAddress {
            self.logger[metadataKey: "peer"] = "\(remote)"
        }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.handshakeTimer = context.eventLoop.scheduleTask(
            in: .nanoseconds(self.limits.handshakeTimeout.inNanoseconds)
        ) {
            handler.value.handshakeTimerFired()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelTimers()
        self.context = nil
    }

    private func cancelTimers() {
        self.handshakeTimer?.cancel()
        self.handshakeTimer = nil
        self.idleTimer?.cancel()
        self.idleTimer = nil
        self.expiryTimer?.cancel()
        self.expiryTimer = nil
        self.stallTimer?.cancel()
        self.stallTimer = nil
    }

    private func handshakeTimerFired() {
        guard let context = self.context else { return }
        switch self.state.handshakeTimedOut(after: self.limits.handshakeTimeout) {
        case .none:
            break
        case .close:
            self.rejections.log(
                "handshake-timeout", "closing a connection that sent no preface within \(self.limits.handshakeTimeout)")
            context.close(promise: nil)
        case .unauthenticated(let fatal):
            self.goAwayAndClose(fatal, context: context)
        }
    }

    /// How long a connection stays open after the server's GOAWAY (idle, or shutting down),
    /// answering requests that crossed it UNAVAILABLE; the client's close ends it sooner.
    static let goAwayGrace = TimeAmount.seconds(1)

    private func idleTimerFired() {
        guard case .goAway(let lastRequestID) = self.state.idleCheck(), let context = self.context else { return }
        self.idleTimer?.cancel()
        self.idleTimer = nil
        self.sendGoAway(
            lastRequestID: lastRequestID,
            message: "connection idle for \(self.limits.idleTimeout ?? .zero); open a new one when needed",
            context: context)
        self.endGraceLater(context: context)
    }

    /// Ends the grace after the server's GOAWAY in ``goAwayGrace``, then closes if drained.
    private func endGraceLater(context: ChannelHandlerContext) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: Self.goAwayGrace) {
            handler.value.state.goAwayGraceEnded()
            if let context = handler.value.context { handler.value.closeIfDrained(context: context) }
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard self.state.readStarted() else { return }
        let buffer = self.unwrapInboundIn(data)
        self.unreportedBytesIn &+= buffer.readableBytes
        do {
            try self.frames.process(buffer: buffer) { self.handleInbound($0, context: context) }
        } catch {
            self.decodingFailed(error, context: context)
        }
        self.watchForStall(context: context)
    }

    /// Arms the stall timer while a frame is partly read; the preface has its own timer.
    private func watchForStall(context: ChannelHandlerContext) {
        guard self.frames.unprocessedBytes > 0, self.state.phase != .awaitingPreface, self.state.isAcceptingInput
        else { return }
        self.lastProgress = .now()
        guard self.stallTimer == nil else { return }
        self.scheduleStallCheck(in: .nanoseconds(self.limits.frameStallTimeout.inNanoseconds), context: context)
    }

    private func scheduleStallCheck(in delay: TimeAmount, context: ChannelHandlerContext) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.stallTimer = context.eventLoop.scheduleTask(in: delay) { handler.value.stallCheck() }
    }

    private func stallCheck() {
        self.stallTimer = nil
        guard let context = self.context, self.frames.unprocessedBytes > 0, self.state.canSendGoAway else { return }
        let timeout = TimeAmount.nanoseconds(self.limits.frameStallTimeout.inNanoseconds)
        let quiet = NIODeadline.now() - self.lastProgress
        guard quiet >= timeout else {
            self.scheduleStallCheck(in: timeout - quiet, context: context)
            return
        }
        self.goAwayAndClose(
            self.state.fail(
                code: .invalidArgument,
                message:
                    "no bytes for \(self.limits.frameStallTimeout) in the middle of a frame (\(self.frames.unprocessedBytes) bytes of it read)"
            ), context: context)
    }

    private func handleInbound(_ inbound: InboundFrame, context: ChannelHandlerContext) {
        // After GOAWAY-and-close, the rest of a read burst is not acted on.
        guard self.state.isAcceptingInput else { return }
        // Frames behind an AUTH wait for its verdict, so they act as whoever it names.
        guard !self.state.isHoldingInput else {
            self.heldFrames.append(inbound)
            return
        }
        switch inbound {
        case .preface(let preface):
            // With authentication required, the handshake also waits for credentials.
            if self.credentialChecks == nil {
                self.handshakeTimer?.cancel()
                self.handshakeTimer = nil
            }
            switch self.state.prefaceReceived(preface) {
            case .sendHello:
                self.sendHello(context: context)
                if let idle = self.limits.idleTimeout, idle > .zero {
                    let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
                    let half = TimeAmount.nanoseconds(max(1, idle.inNanoseconds / 2))
                    self.idleTimer = context.eventLoop.scheduleRepeatedTask(initialDelay: half, delay: half) { _ in
                        handler.value.idleTimerFired()
                    }
                }
            case .close(let fatal):
                self.goAwayAndClose(fatal, context: context)
            }
        case .httpRequest:
            self.answerHTTP(context: context)
        case .frame(let frame):
            self.receive(frame, context: context)
        case .oversized(let header):
            self.receiveOversized(header, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.finishBurst(context: context)
        context.fireChannelReadComplete()
    }

    /// Ends a burst of frames: dispatches a held lone request, flushes once, closes if drained.
    private func finishBurst(context: ChannelHandlerContext) {
        let action = self.state.readComplete()
        if let request = action.dispatch {
            self.dispatch(request, mayRunInPlace: action.mayRunInPlace, context: context)
        }
        if self.state.burstEnded() { self.flushFrames(context: context) }
        self.reportTraffic()
        // A GOAWAY read in this burst drains the connection; it closes once nothing is left.
        self.closeIfDrained(context: context)
    }

    /// Adds the bytes counted since the last report to the listener's totals.
    private func reportTraffic() {
        guard let traffic = self.traffic else { return }
        if self.unreportedBytesIn > 0 {
            traffic.bytesIn.add(UInt64(self.unreportedBytesIn), ordering: .relaxed)
            self.unreportedBytesIn = 0
        }
        if self.unreportedBytesOut > 0 {
            traffic.bytesOut.add(UInt64(self.unreportedBytesOut), ordering: .relaxed)
            self.unreportedBytesOut = 0
        }
    }

    private func dispatch(_ request: StateMachine.ReadyRequest, mayRunInPlace: Bool, context: ChannelHandlerContext) {
        // nil: no authentication on this server, every method allowed (and no principal to copy).
        let principal: Principal?
        switch self.state.credentials {
        case .notRequired:
            principal = nil
        case .authenticated(let authenticated):
            principal = authenticated
        case .awaiting, .verifying, .expired:
            self.complete(
                id: request.id, token: request.token,
                .failure(self.state.missingCredentials ?? InferWireError(code: .unauthenticated, message: "")))
            return
        }
        if let refusal = self.services.refusal(method: request.method) {
            self.complete(id: request.id, token: request.token, .failure(refusal))
            return
        }
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        let inbox = self.inbox
        let (id, token) = (request.id, request.token)
        let traffic = self.traffic
        traffic?.requestsInFlight.add(1, ordering: .relaxed)
        self.dispatcher.handle(
            method: request.method, payload: request.payload, deadline: request.deadline,
            cancellation: request.cancellation,
            mayRunInPlace: mayRunInPlace,
            principal: principal,
            accessLogger: self.logsAccess ? self.logger : nil
        ) { result in
            traffic?.requestsInFlight.subtract(1, ordering: .relaxed)
            if loop.inEventLoop {
                handler.value.complete(id: id, token: token, result)
            } else if inbox.post(id: id, token: token, result) {
                loop.execute { handler.value.drainInbox() }
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.cancelTimers()
        self.reportTraffic()
        let withdrawn = self.state.channelClosed()
        if withdrawn > 0 {
            self.logger.debug("peer closed with requests in flight", metadata: ["in_flight": "\(withdrawn)"])
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            self.tlsHandshakeCompleted(context: context)
            context.fireUserInboundEventTriggered(event)
        } else if event is ChannelShouldQuiesceEvent {
            self.quiesce(context: context)
        } else if case ChannelEvent.inputClosed = event {
            switch self.state.inputClosedByPeer() {
            case .close:
                context.close(promise: nil)
            case .finishInput:
                do {
                    try self.frames.finishProcessing(seenEOF: true) { self.handleInbound($0, context: context) }
                } catch {
                    self.decodingFailed(error, context: context)
                }
                self.closeIfDrained(context: context)
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.debug("connection error", metadata: ["error": "\(error)"])
        _ = self.state.channelClosed()
        context.close(promise: nil)
    }

    // MARK: Backpressure

    func read(context: ChannelHandlerContext) {
        if self.state.readRequested(writable: context.channel.isWritable) { context.read() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if self.state.writabilityChanged(writable: context.channel.isWritable) { context.read() }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Frames

    private func decodingFailed(_ error: any Error, context: ChannelHandlerContext) {
        let decoding = error as? FrameDecodingError
        let message = decoding?.message ?? "undecodable byte stream: \(error)"
        let code: InferWireError.Code = decoding?.kind == .tlsHandshake ? .failedPrecondition : .invalidArgument
        guard self.state.canSendGoAway else { return }
        self.goAwayAndClose(self.state.fail(code: code, message: message), context: context)
    }

    private func sendHello(context: ChannelHandlerContext) {
        var hello = Inferwire_V1_Hello()
        hello.version = UInt32(Preface.currentVersion)
        hello.maxFrameSize = UInt32(self.limits.maxFrameSize)
        hello.maxConcurrentRequests = UInt32(self.limits.maxConcurrentRequests)
        hello.serverName = self.dispatcher.info.name
        hello.serverVersion = self.dispatcher.info.version
        hello.compression = true
        hello.authenticationRequired = self.credentialChecks != nil
        if self.credentialChecks != nil, let principal = self.state.principal {
            hello.principal = principal.wire
        }
        self.write(FrameHeader(payloadLength: 0, type: .hello), message: hello, context: context)
    }

    private func receive(_ frame: Frame, context: ChannelHandlerContext) {
        let header = frame.header
        switch header.type {
        case .request:
            self.receiveRequest(frame, context: context)
        case .cancel:
            if case .answerCancelled(let method) = self.state.cancelReceived(header.requestID) {
                self.writeError(
                    id: header.requestID, method: method,
                    InferWireError(code: .cancelled, message: "cancelled by the client"), context: context)
                self.closeIfDrained(context: context)
            }
        case .ping:
            guard header.payloadLength <= 64 else {
                self.goAwayAndClose(
                    self.state.fail(
                        code: .invalidArgument, message: "PING payload is \(header.payloadLength) bytes; at most 64"),
                    context: context)
                return
            }
            let pong = Frame.encode(
                FrameHeader(payloadLength: 0, type: .pong), payload: frame.payload, allocator: context.channel.allocator
            )
            self.write(pong, context: context)
        case .pong:
            break
        case .auth:
            self.receiveAuth(frame, context: context)
        case .goAway:
            // Closing waits for the end of the read burst (channelReadComplete), so requests
            // read after the GOAWAY are answered UNAVAILABLE first.
            if case .sendGoAway(let lastRequestID) = self.state.goAwayReceived() {
                self.sendGoAway(lastRequestID: lastRequestID, message: "client sent GOAWAY", context: context)
            }
        default:
            let message =
                header.type.isKnown
                ? "a client may not send \(header.type) frames"
                : "unknown frame type \(header.type)"
            self.goAwayAndClose(self.state.fail(code: .invalidArgument, message: message), context: context)
        }
    }

    /// Whether a REQUEST header may start work; answers it (or ends the connection) if not.
    private func admit(_ header: FrameHeader, context: ChannelHandlerContext) -> Bool {
        switch self.state.requestReceived(header) {
        case .admit:
            return true
        case .reject(let error):
            self.writeError(id: header.requestID, method: header.method, error, context: context)
            return false
        case .close(let fatal):
            self.goAwayAndClose(fatal, context: context)
            return false
        }
    }

    private func receiveRequest(_ frame: Frame, context: ChannelHandlerContext) {
        let header = frame.header
        // The deadline counts from arrival, before any work on the payload.
        let deadline =
            header.timeoutMicros == 0 ? nil : ContinuousClock.now + .microseconds(Int64(header.timeoutMicros))
        guard self.admit(header, context: context) else { return }

        var payload = frame.payload
        if header.flags.contains(.compressed) {
            do {
                payload = try PayloadCompression.decompress(
                    payload, limit: self.limits.maxFrameSize, allocator: context.channel.allocator)
            } catch {
                let code: InferWireError.Code = error.kind == .tooLarge ? .resourceExhausted : .invalidArgument
                self.writeError(
                    id: header.requestID, method: header.method, InferWireError(code: code, message: error.message),
                    context: context)
                return
            }
        }
        switch self.state.requestReady(header, payload: [UInt8](buffer: payload), deadline: deadline) {
        case .hold:
            break
        case .dispatch(let request):
            self.dispatch(request, mayRunInPlace: false, context: context)
        case .dispatchBoth(let held, let current):
            self.dispatch(held, mayRunInPlace: false, context: context)
            self.dispatch(current, mayRunInPlace: false, context: context)
        }
    }

    private func receiveOversized(_ header: FrameHeader, context: ChannelHandlerContext) {
        let message =
            "\(header.type) frame of \(header.payloadLength) bytes exceeds the \(self.limits.maxFrameSize)-byte limit"
        guard header.type == .request else {
            self.goAwayAndClose(self.state.fail(code: .resourceExhausted, message: message), context: context)
            return
        }
        // The decoder skips the payload unbuffered; the connection stays usable.
        guard self.admit(header, context: context) else { return }
        self.writeError(
            id: header.requestID, method: header.method, InferWireError(code: .resourceExhausted, message: message),
            context: context)
    }

    /// Delivers every result posted since the last drain, then flushes once.
    private func drainInbox() {
        let results = self.inbox.take()
        let wasReading = self.state.deliveryStarted()
        for (id, token, result) in results { self.complete(id: id, token: token, result) }
        if self.state.deliveryFinished(wasReading: wasReading), let context = self.context {
            self.flushFrames(context: context)
        }
    }

    /// A request's result, on the event loop.
    private func complete(id: UInt32, token: UInt64, _ result: Result<[UInt8], InferWireError>) {
        guard case .write(let method, let compressResponse) = self.state.resultReceived(id: id, token: token),
            let context = self.context
        else { return }
        switch result {
        case .success(let bytes):
            guard bytes.count <= self.limits.maxFrameSize else {
                let error = InferWireError(
                    code: .resourceExhausted,
                    message: "response of \(bytes.count) bytes exceeds the \(self.limits.maxFrameSize)-byte frame limit"
                )
                self.writeError(id: id, method: method, error, context: context)
                break
            }
            let header = FrameHeader(payloadLength: 0, type: .response, method: method, requestID: id)
            self.write(
                Frame.encode(header, bytes: bytes, compress: compressResponse, allocator: context.channel.allocator),
                context: context)
        case .failure(let error):
            self.writeError(id: id, method: method, error, context: context)
        }
        self.closeIfDrained(context: context)
    }

    // MARK: Shutdown

    private func quiesce(context: ChannelHandlerContext) {
        switch self.state.quiesce() {
        case .none:
            break
        case .close:
            context.close(promise: nil)
        case .sendGoAway(let lastRequestID):
            self.sendGoAway(lastRequestID: lastRequestID, message: "server is shutting down", context: context)
            self.flushFrames(context: context)
            self.endGraceLater(context: context)
        }
    }

    /// GOAWAY `UNAVAILABLE`: the connection drains; requests already read are answered.
    private func sendGoAway(lastRequestID: UInt32, message: String, context: ChannelHandlerContext) {
        var goAway = Inferwire_V1_GoAway()
        goAway.lastRequestID = lastRequestID
        goAway.code = InferWireError.Code.unavailable.wire
        goAway.message = message
        self.write(FrameHeader(payloadLength: 0, type: .goAway), message: goAway, context: context)
    }

    private func closeIfDrained(context: ChannelHandlerContext) {
        guard self.state.closeIfDrained() else { return }
        self.flushFrames(context: context)
        self.shutDown(context: context)
    }

    /// Sends GOAWAY with the reason and closes: the byte stream can no longer be trusted.
    private func goAwayAndClose(_ fatal: StateMachine.OnFatal, context: ChannelHandlerContext) {
        self.rejections.log("protocol-error", "closing connection: \(fatal.message)")
        var goAway = Inferwire_V1_GoAway()
        goAway.lastRequestID = fatal.lastRequestID
        goAway.code = fatal.code.wire
        goAway.message = fatal.message
        let bytes: [UInt8] = (try? goAway.serializedBytes()) ?? []
        let frame = Frame.encode(
            FrameHeader(payloadLength: 0, type: .goAway), bytes: bytes, allocator: context.channel.allocator)
        self.writeCoalesced(context: context)
        context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
        self.shutDown(context: context)
    }

    private func answerHTTP(context: ChannelHandlerContext) {
        self.state.httpReceived()
        let body = "This port speaks the InferWire binary protocol (see Protos/PROTOCOL.md), not HTTP.\n"
        let response =
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
            + body
        self.rejections.log("http", "closing connection: peer sent an HTTP request")
        context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(string: response)), promise: nil)
        self.shutDown(context: context)
    }

    /// Shuts the output after what was written, then closes once the peer closes its side
    /// or after a short linger (see ``StateMachine/OnShutdown``).
    private func shutDown(context: ChannelHandlerContext) {
        let channel = context.channel
        switch self.state.shutdownStarted() {
        case .closeNow:
            channel.close(promise: nil)
        case .shutOutputAndLinger:
            channel.close(mode: .output, promise: nil)
            channel.eventLoop.scheduleTask(in: Self.lingerTime) { channel.close(promise: nil) }
            // Keep reading (and discarding) so the peer's FIN is seen even under backpressure.
            context.read()
        }
    }

    // MARK: Writing

    private func writeError(id: UInt32, method: UInt16, _ error: InferWireError, context: ChannelHandlerContext) {
        self.write(
            FrameHeader(payloadLength: 0, type: .error, method: method, requestID: id), message: error.status,
            context: context)
    }

    private func write(_ header: FrameHeader, message: some Message, context: ChannelHandlerContext) {
        let bytes: [UInt8] = (try? message.serializedBytes()) ?? []
        self.write(Frame.encode(header, bytes: bytes, allocator: context.channel.allocator), context: context)
    }

    /// Frames up to this size written in one burst are sent as one buffer: one `writev`
    /// entry, and under TLS one record and one encryption instead of one per frame.
    static let coalescingLimit = 16 * 1024

    private func write(_ frame: ByteBuffer, context: ChannelHandlerContext) {
        self.unreportedBytesOut &+= frame.readableBytes
        if frame.readableBytes <= Self.coalescingLimit {
            if self.coalesced == nil {
                self.coalesced = frame
            } else {
                self.coalesced!.writeImmutableBuffer(frame)
            }
        } else {
            self.writeCoalesced(context: context)
            context.write(self.wrapOutboundOut(frame), promise: nil)
        }
        if self.state.frameWritten() { self.flushFrames(context: context) }
    }

    /// Hands the frames gathered so far to the pipeline, in order, ahead of whatever comes next.
    private func writeCoalesced(context: ChannelHandlerContext) {
        if let coalesced = self.coalesced.take() {
            context.write(self.wrapOutboundOut(coalesced), promise: nil)
        }
    }

    private func flushFrames(context: ChannelHandlerContext) {
        self.writeCoalesced(context: context)
        context.flush()
        if self.unreportedBytesOut > 0 { self.reportTraffic() }
    }
}

/// Results posted from execution threads for one connection's event loop.
final class CompletionInbox: Sendable {
    private let state = Mutex<(results: [(UInt32, UInt64, Result<[UInt8], InferWireError>)], scheduled: Bool)>(
        ([], false))

    /// Adds a result; true when the caller must schedule a drain (none is pending).
    func post(id: UInt32, token: UInt64, _ result: Result<[UInt8], InferWireError>) -> Bool {
        self.state.withLock { state in
            state.results.append((id, token, result))
            if state.scheduled { return false }
            state.scheduled = true
            return true
        }
    }

    /// Everything posted so far; the next post schedules a new drain.
    func take() -> [(UInt32, UInt64, Result<[UInt8], InferWireError>)] {
        self.state.withLock { state in
            state.scheduled = false
            defer { state.results.removeAll(keepingCapacity: true) }
            return state.results
        }
    }
}

// MARK: Authentication

extension ServerConnectionHandler {
    /// AUTH: checks the credentials off the event loop, holding every later frame until the
    /// verdict; accepted, the connection acts as the principal; refused, it ends.
    fileprivate func receiveAuth(_ frame: Frame, context: ChannelHandlerContext) {
        guard frame.payload.readableBytes <= Self.maxAuthPayload else {
            self.goAwayAndClose(
                self.state.fail(
                    code: .invalidArgument,
                    message: "AUTH payload is \(frame.payload.readableBytes) bytes; at most \(Self.maxAuthPayload)"),
                context: context)
            return
        }
        let request: Inferwire_V1_Authenticate
        do {
            request = try Inferwire_V1_Authenticate(serializedBytes: [UInt8](buffer: frame.payload))
        } catch {
            self.goAwayAndClose(
                self.state.fail(code: .invalidArgument, message: "AUTH payload is not an Authenticate message"),
                context: context)
            return
        }
        switch self.state.authReceived() {
        case .answer(let principal):
            self.sendAuthenticated(principal, context: context)
        case .verify:
            guard let checks = self.credentialChecks else { return }
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            let submitted = checks.submit(token: request.bearerToken) { result in
                loop.execute { handler.value.authDecided(result) }
            }
            if !submitted {
                self.authDecided(.failure(InferWireError(code: .unavailable, message: "server is shutting down")))
            }
        }
    }

    /// The verdict on an AUTH, on the event loop: answer it, then act on the frames held behind it.
    fileprivate func authDecided(_ result: Result<Principal, InferWireError>) {
        guard let context = self.context, self.state.isAcceptingInput else { return }
        switch result {
        case .success(let principal):
            let readNow = self.state.authSucceeded(principal)
            self.handshakeTimer?.cancel()
            self.handshakeTimer = nil
            self.scheduleExpiry(of: principal, context: context)
            self.logger.debug("authenticated", metadata: ["principal": "\(principal.name)"])
            _ = self.state.readStarted()
            self.sendAuthenticated(principal, context: context)
            let held = self.heldFrames
            self.heldFrames = []
            for (index, frame) in held.enumerated() {
                self.handleInbound(frame, context: context)
                // Another AUTH among them holds the rest again.
                if self.state.isHoldingInput {
                    self.heldFrames = Array(held[(index + 1)...]) + self.heldFrames
                    break
                }
            }
            self.finishBurst(context: context)
            if readNow { context.read() }
        case .failure(let error):
            self.heldFrames = []
            self.rejections.log("authentication", "refusing credentials: \(error.message)")
            let code: InferWireError.Code = error.code == .unavailable ? .unavailable : .unauthenticated
            var fatal = self.state.authFailed(error)
            fatal.code = code
            self.goAwayAndClose(fatal, context: context)
        }
    }

    private func sendAuthenticated(_ principal: Principal, context: ChannelHandlerContext) {
        var answer = Inferwire_V1_Authenticated()
        answer.principal = principal.wire
        self.write(FrameHeader(payloadLength: 0, type: .auth), message: answer, context: context)
    }

    /// From the expiry of a principal's credentials on, its requests are answered UNAUTHENTICATED.
    private func scheduleExpiry(of principal: Principal, context: ChannelHandlerContext) {
        self.expiryTimer?.cancel()
        self.expiryTimer = nil
        guard let expiresAt = principal.expiresAt else { return }
        let remaining = Double(expiresAt) - Date().timeIntervalSince1970
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.expiryTimer = context.eventLoop.scheduleTask(in: .milliseconds(Int64(max(0, remaining) * 1000))) {
            handler.value.state.credentialsExpired(principal)
        }
    }

    /// A verified TLS client certificate whose common name the token file lists
    /// authenticates the connection.
    fileprivate func tlsHandshakeCompleted(context: ChannelHandlerContext) {
        guard let checks = self.credentialChecks,
            let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
            let certificate = tls.peerCertificate,
            let commonName = TLSContextStore.commonName(of: certificate)
        else { return }
        if let principal = checks.authenticator.principal(forCertificateCommonName: commonName) {
            self.state.certificateAuthenticated(principal)
            self.logger.debug("authenticated by client certificate", metadata: ["principal": "\(principal.name)"])
        }
    }
}
