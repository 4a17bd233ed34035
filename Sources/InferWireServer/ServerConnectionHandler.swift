import InferWireCore
import InferWireEngine
import InferWireProto
import InferWireWire
import Logging
import NIOCore
import Synchronization

/// The server side of one InferWire connection, on its event loop.
///
/// It answers the preface, dispatches REQUEST frames, writes RESPONSE/ERROR frames
/// as results complete (in any order), honours CANCEL and PING, and drains on
/// GOAWAY or shutdown. The request path stays in this handler rather than crossing
/// into async code: each async hop costs ≈ 15 µs on these machines (see
/// docs/DESIGN.md), more than the whole round trip of a small model.
///
/// It decodes frames itself (a `FrameDecoder` driven by a single-step processor)
/// rather than behind a `ByteToMessageHandler`: that saves a pipeline hop and a boxed
/// `NIOAny` per frame, ≈ 5 % of the event loop's time in a profile of the round trip.
///
/// Writes made while reading a burst of frames are flushed once, in
/// `channelReadComplete`; results that complete later are flushed as they come.
/// While the socket cannot take more output the handler stops reading, so a peer
/// that sends without reading cannot grow the server's memory.
final class ServerConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        case awaitingPreface
        case open
        /// GOAWAY sent or received: no new requests; close once the in-flight ones finish.
        case draining
        /// Output shut down (or closing); input is discarded until the peer closes.
        case closed
    }

    private struct InFlight {
        let token: UInt64
        let method: UInt16
        let compressResponse: Bool
        let cancellation: RequestCancellation
    }

    /// How long a closing connection waits for the peer's FIN after shutting its own
    /// output, so the last frames are not destroyed by a reset.
    private static let lingerTime = TimeAmount.seconds(1)

    private let dispatcher: RequestDispatcher
    private let limits: InferWireServer.Configuration.Limits
    private var logger: Logger
    private let frames: NIOSingleStepByteToMessageProcessor<FrameDecoder>

    private var phase = Phase.awaitingPreface
    private var inFlight: [UInt32: InFlight] = [:]
    /// Cancelled requests whose work has not finished: they still count against the
    /// concurrency limit, so REQUEST+CANCEL cannot pile up work.
    private var abandoned: [UInt64: RequestCancellation] = [:]
    private var nextToken: UInt64 = 0
    private var highestRequestID: UInt32 = 0
    private var inputClosed = false
    private var readingBurst = false
    /// The first request of the current read burst, not yet dispatched: if the burst brings
    /// no other, it may run in place on this thread (no queue to join, nothing to batch it
    /// with); if another follows, both are queued so the batcher can merge them.
    private var heldRequest: ReadyRequest?
    /// REQUEST frames seen in the current read burst.
    private var requestsThisBurst = 0

    /// A request admitted and ready for the dispatcher (held until the burst ends, if first).
    private struct ReadyRequest {
        var method: UInt16
        var id: UInt32
        var token: UInt64
        var payload: [UInt8]
        var deadline: ContinuousClock.Instant?
        var cancellation: RequestCancellation
    }
    private var needsFlush = false
    private var readPending = false
    private var context: ChannelHandlerContext?
    /// Results completed on other threads, delivered to the event loop in one hop per
    /// burst (a batch of N requests costs one task and one flush, not N).
    private let inbox = CompletionInbox()

    init(dispatcher: RequestDispatcher, limits: InferWireServer.Configuration.Limits, logger: Logger) {
        self.dispatcher = dispatcher
        self.limits = limits
        self.logger = logger
        self.frames = NIOSingleStepByteToMessageProcessor(FrameDecoder(maxPayloadSize: limits.maxFrameSize, expectPreface: true))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let remote = context.channel.remoteAddress {
            self.logger[metadataKey: "peer"] = "\(remote)"
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard self.phase != .closed else { return }
        self.readingBurst = true
        do {
            try self.frames.process(buffer: self.unwrapInboundIn(data)) { self.handleInbound($0, context: context) }
        } catch {
            self.decodingFailed(error, context: context)
        }
    }

    private func handleInbound(_ inbound: InboundFrame, context: ChannelHandlerContext) {
        // After GOAWAY-and-close, the rest of a read burst is not acted on.
        guard self.phase != .closed else { return }
        switch inbound {
        case .preface(let preface):
            self.receivePreface(preface, context: context)
        case .httpRequest:
            self.answerHTTP(context: context)
        case .frame(let frame):
            self.receive(frame, context: context)
        case .oversized(let header):
            self.receiveOversized(header, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.releaseHeldRequest(mayRunInPlace: self.requestsThisBurst == 1)
        self.requestsThisBurst = 0
        self.readingBurst = false
        if self.needsFlush {
            self.needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    private func releaseHeldRequest(mayRunInPlace: Bool) {
        guard let held = self.heldRequest, let context = self.context else { return }
        self.heldRequest = nil
        self.dispatch(held, mayRunInPlace: mayRunInPlace, context: context)
    }

    private func dispatch(_ request: ReadyRequest, mayRunInPlace: Bool, context: ChannelHandlerContext) {
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        let inbox = self.inbox
        let (id, token) = (request.id, request.token)
        self.dispatcher.handle(
            method: request.method, payload: request.payload, deadline: request.deadline, cancellation: request.cancellation,
            mayRunInPlace: mayRunInPlace
        ) { result in
            if loop.inEventLoop {
                handler.value.complete(id: id, token: token, result)
            } else if inbox.post(id: id, token: token, result) {
                loop.execute { handler.value.drainInbox() }
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Nobody is left to answer: a held request is dropped (abandonAll cancels it).
        self.heldRequest = nil
        if !self.inFlight.isEmpty {
            self.logger.debug("peer closed with requests in flight", metadata: ["in_flight": "\(self.inFlight.count)"])
        }
        self.phase = .closed
        self.abandonAll()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            self.quiesce(context: context)
        } else if case ChannelEvent.inputClosed = event {
            if self.phase == .closed {
                // The peer acknowledged our shutdown: finish closing.
                context.close(promise: nil)
                return
            }
            // The peer finished sending: a partial frame left over is an error; otherwise
            // answer what it asked, then close.
            self.inputClosed = true
            do {
                try self.frames.finishProcessing(seenEOF: true) { self.handleInbound($0, context: context) }
            } catch {
                self.decodingFailed(error, context: context)
            }
            self.closeIfDrained(context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.debug("connection error", metadata: ["error": "\(error)"])
        self.phase = .closed
        self.abandonAll()
        context.close(promise: nil)
    }

    // MARK: Backpressure

    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            self.readPending = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, self.readPending {
            self.readPending = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Frames

    private func decodingFailed(_ error: any Error, context: ChannelHandlerContext) {
        let message = (error as? FrameDecodingError)?.message ?? "undecodable byte stream: \(error)"
        self.logger.info("closing connection: \(message)")
        self.goAwayAndClose(code: .invalidArgument, message: message, context: context)
    }

    private func receivePreface(_ preface: Preface, context: ChannelHandlerContext) {
        guard preface.minVersion <= Preface.currentVersion, Preface.currentVersion <= preface.maxVersion else {
            let message = "client speaks protocol versions \(preface.minVersion)–\(preface.maxVersion); this server speaks \(Preface.currentVersion)"
            self.logger.info("closing connection: \(message)")
            self.goAwayAndClose(code: .failedPrecondition, message: message, context: context)
            return
        }
        self.phase = .open
        var hello = Inferwire_V1_Hello()
        hello.version = UInt32(Preface.currentVersion)
        hello.maxFrameSize = UInt32(self.limits.maxFrameSize)
        hello.maxConcurrentRequests = UInt32(self.limits.maxConcurrentRequests)
        hello.serverName = self.dispatcher.info.name
        hello.serverVersion = self.dispatcher.info.version
        hello.compression = true
        self.write(FrameHeader(payloadLength: 0, type: .hello), message: hello, context: context)
    }

    private func receive(_ frame: Frame, context: ChannelHandlerContext) {
        let header = frame.header
        switch header.type {
        case .request:
            self.receiveRequest(frame, context: context)
        case .cancel:
            self.receiveCancel(header.requestID, context: context)
        case .ping:
            guard header.payloadLength <= 64 else {
                self.goAwayAndClose(code: .invalidArgument, message: "PING payload is \(header.payloadLength) bytes; at most 64", context: context)
                return
            }
            let pong = Frame.encode(FrameHeader(payloadLength: 0, type: .pong), payload: frame.payload, allocator: context.channel.allocator)
            self.write(pong, context: context)
        case .pong:
            break
        case .goAway:
            // The client will send nothing more: finish what it asked, then close.
            self.phase = .draining
            self.closeIfDrained(context: context)
        default:
            let message = header.type.isKnown
                ? "a client may not send \(header.type) frames"
                : "unknown frame type \(header.type)"
            self.logger.info("closing connection: \(message)")
            self.goAwayAndClose(code: .invalidArgument, message: message, context: context)
        }
    }

    /// Whether a REQUEST header may start work; answers it (or ends the connection) if not.
    private func admit(_ header: FrameHeader, context: ChannelHandlerContext) -> Bool {
        let id = header.requestID
        guard id != 0 else {
            self.goAwayAndClose(code: .invalidArgument, message: "request id 0 is reserved for the connection", context: context)
            return false
        }
        guard self.inFlight[id] == nil else {
            // Responses are matched by id, so a reused one would corrupt the peer's matching.
            self.goAwayAndClose(code: .invalidArgument, message: "request id \(id) is already in flight", context: context)
            return false
        }
        guard self.phase == .open else {
            self.writeError(id: id, method: header.method, InferWireError(code: .unavailable, message: "connection is draining (GOAWAY sent); retry on a new connection"), context: context)
            return false
        }
        self.highestRequestID = max(self.highestRequestID, id)
        guard self.inFlight.count + self.abandoned.count < self.limits.maxConcurrentRequests else {
            self.writeError(id: id, method: header.method, InferWireError(code: .resourceExhausted, message: "more than \(self.limits.maxConcurrentRequests) requests in flight on this connection"), context: context)
            return false
        }
        return true
    }

    private func receiveRequest(_ frame: Frame, context: ChannelHandlerContext) {
        let header = frame.header
        // The deadline counts from arrival, before any work on the payload.
        let deadline = header.timeoutMicros == 0 ? nil : ContinuousClock.now + .microseconds(Int64(header.timeoutMicros))
        guard self.admit(header, context: context) else { return }
        let id = header.requestID

        var payload = frame.payload
        if header.flags.contains(.compressed) {
            do {
                payload = try PayloadCompression.decompress(payload, limit: self.limits.maxFrameSize, allocator: context.channel.allocator)
            } catch {
                let code: InferWireError.Code = error.kind == .tooLarge ? .resourceExhausted : .invalidArgument
                self.writeError(id: id, method: header.method, InferWireError(code: code, message: error.message), context: context)
                return
            }
        }

        self.nextToken &+= 1
        let token = self.nextToken
        let cancellation = RequestCancellation()
        self.inFlight[id] = InFlight(
            token: token, method: header.method, compressResponse: header.flags.contains(.compressResponse), cancellation: cancellation)

        let request = ReadyRequest(
            method: header.method, id: id, token: token, payload: [UInt8](buffer: payload), deadline: deadline, cancellation: cancellation)
        self.requestsThisBurst += 1
        if self.readingBurst && self.requestsThisBurst == 1 {
            self.heldRequest = request
        } else {
            self.releaseHeldRequest(mayRunInPlace: false)
            self.dispatch(request, mayRunInPlace: false, context: context)
        }
    }

    private func receiveCancel(_ id: UInt32, context: ChannelHandlerContext) {
        guard let entry = self.inFlight.removeValue(forKey: id) else { return }
        entry.cancellation.cancel()
        self.abandoned[entry.token] = entry.cancellation
        self.writeError(id: id, method: entry.method, InferWireError(code: .cancelled, message: "cancelled by the client"), context: context)
        self.closeIfDrained(context: context)
    }

    private func receiveOversized(_ header: FrameHeader, context: ChannelHandlerContext) {
        let message = "\(header.type) frame of \(header.payloadLength) bytes exceeds the \(self.limits.maxFrameSize)-byte limit"
        guard header.type == .request else {
            self.logger.info("closing connection: \(message)")
            self.goAwayAndClose(code: .resourceExhausted, message: message, context: context)
            return
        }
        // The decoder skips the payload unbuffered; the connection stays usable.
        guard self.admit(header, context: context) else { return }
        self.writeError(id: header.requestID, method: header.method, InferWireError(code: .resourceExhausted, message: message), context: context)
    }

    /// Delivers every result posted since the last drain, then flushes once.
    private func drainInbox() {
        let results = self.inbox.take()
        let wasReading = self.readingBurst
        self.readingBurst = true
        for (id, token, result) in results { self.complete(id: id, token: token, result) }
        self.readingBurst = wasReading
        if !wasReading, self.needsFlush, let context = self.context {
            self.needsFlush = false
            context.flush()
        }
    }

    /// A request's result, on the event loop.
    private func complete(id: UInt32, token: UInt64, _ result: Result<[UInt8], InferWireError>) {
        guard let entry = self.inFlight[id], entry.token == token else {
            // Cancelled, or the connection closed meanwhile: its work is over now.
            self.abandoned.removeValue(forKey: token)
            return
        }
        self.inFlight.removeValue(forKey: id)
        guard let context = self.context, self.phase != .closed else { return }
        switch result {
        case .success(let bytes):
            guard bytes.count <= self.limits.maxFrameSize else {
                let error = InferWireError(code: .resourceExhausted, message: "response of \(bytes.count) bytes exceeds the \(self.limits.maxFrameSize)-byte frame limit")
                self.writeError(id: id, method: entry.method, error, context: context)
                break
            }
            let header = FrameHeader(payloadLength: 0, type: .response, method: entry.method, requestID: id)
            self.write(Frame.encode(header, bytes: bytes, compress: entry.compressResponse, allocator: context.channel.allocator), context: context)
        case .failure(let error):
            self.writeError(id: id, method: entry.method, error, context: context)
        }
        self.closeIfDrained(context: context)
    }

    /// Withdraws every request: queued work for a gone peer is skipped, not run.
    private func abandonAll() {
        for entry in self.inFlight.values { entry.cancellation.cancel() }
        self.inFlight.removeAll()
    }

    // MARK: Shutdown

    private func quiesce(context: ChannelHandlerContext) {
        switch self.phase {
        case .awaitingPreface:
            self.phase = .closed
            context.close(promise: nil)
        case .open:
            self.phase = .draining
            var goAway = Inferwire_V1_GoAway()
            goAway.lastRequestID = self.highestRequestID
            goAway.code = .unavailable
            goAway.message = "server is shutting down"
            self.write(FrameHeader(payloadLength: 0, type: .goAway), message: goAway, context: context)
            self.closeIfDrained(context: context)
        case .draining, .closed:
            break
        }
    }

    private func closeIfDrained(context: ChannelHandlerContext) {
        guard self.phase == .draining || self.inputClosed, self.inFlight.isEmpty, self.phase != .closed else { return }
        self.phase = .closed
        self.needsFlush = false
        context.flush()
        self.shutDown(context: context)
    }

    /// Ends a connection whose byte stream can no longer be trusted.
    private func goAwayAndClose(code: InferWireError.Code, message: String, context: ChannelHandlerContext) {
        guard self.phase != .closed else { return }
        self.phase = .closed
        self.abandonAll()
        var goAway = Inferwire_V1_GoAway()
        goAway.lastRequestID = self.highestRequestID
        goAway.code = code.wire
        goAway.message = message
        let bytes: [UInt8] = (try? goAway.serializedBytes()) ?? []
        let frame = Frame.encode(FrameHeader(payloadLength: 0, type: .goAway), bytes: bytes, allocator: context.channel.allocator)
        context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
        self.shutDown(context: context)
    }

    private func answerHTTP(context: ChannelHandlerContext) {
        self.phase = .closed
        let body = "This port speaks the InferWire binary protocol (see Protos/PROTOCOL.md), not HTTP.\n"
        let response = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        self.logger.info("closing connection: peer sent an HTTP request")
        context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(string: response)), promise: nil)
        self.shutDown(context: context)
    }

    /// Shuts the output after what was written, then closes once the peer closes its side
    /// or after a short linger. Closing at once with unread input would make the kernel
    /// send a reset, which can destroy the last frames before the peer reads them.
    private func shutDown(context: ChannelHandlerContext) {
        let channel = context.channel
        if self.inputClosed {
            // Nothing more can arrive, so nothing can provoke a reset.
            channel.close(promise: nil)
            return
        }
        channel.close(mode: .output, promise: nil)
        channel.eventLoop.scheduleTask(in: Self.lingerTime) { channel.close(promise: nil) }
        // Keep reading (and discarding) so the peer's FIN is seen even under backpressure.
        self.readPending = false
        context.read()
    }

    // MARK: Writing

    private func writeError(id: UInt32, method: UInt16, _ error: InferWireError, context: ChannelHandlerContext) {
        self.write(FrameHeader(payloadLength: 0, type: .error, method: method, requestID: id), message: error.status, context: context)
    }

    private func write(_ header: FrameHeader, message: some Message, context: ChannelHandlerContext) {
        let bytes: [UInt8] = (try? message.serializedBytes()) ?? []
        self.write(Frame.encode(header, bytes: bytes, allocator: context.channel.allocator), context: context)
    }

    private func write(_ frame: ByteBuffer, context: ChannelHandlerContext) {
        context.write(self.wrapOutboundOut(frame), promise: nil)
        if self.readingBurst {
            self.needsFlush = true
        } else {
            context.flush()
        }
    }
}

/// Results posted from execution threads for one connection's event loop.
final class CompletionInbox: Sendable {
    private let state = Mutex<(results: [(UInt32, UInt64, Result<[UInt8], InferWireError>)], scheduled: Bool)>(([], false))

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
