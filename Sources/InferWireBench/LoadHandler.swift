import Histogram
import InferWireCore
package import InferWireProto
import InferWireWire
import NIOCore

/// How a connection is generating load right now.
enum LoadShape {
    case idle
    /// Keep `target` requests in flight; send the next as soon as one is answered.
    case closed(target: Int)
    /// Send on a schedule whatever is in flight.
    case open(OpenSchedule)
}

struct OpenSchedule {
    var arrivals: ArrivalSchedule
    /// Uptime nanoseconds at which the next request is due.
    var nextDue: UInt64
    var maxInFlight: Int
}

/// One generator connection, driven entirely on its event loop: requests are sent from
/// the handler as answers arrive (closed loop) or as timers fire (open loop), so the
/// generator adds no async hop to the round trip it measures.
final class LoadHandler: ChannelInboundHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundOut = ByteBuffer

    /// The whole REQUEST frame; each send copies it and fills in the request id.
    private let template: ByteBuffer
    private let maxResponseSize: Int
    private let helloPromise: EventLoopPromise<Inferwire_V1_Hello>
    private var context: ChannelHandlerContext?
    /// Intended send time (uptime ns) of each request in flight, by id.
    private var pending: [UInt32: UInt64] = [:]
    private var lastID: UInt32 = 0
    private var tally = WindowTally()
    private var shape = LoadShape.idle
    private var timer: Scheduled<Void>?
    private var drained: EventLoopPromise<Void>?
    private var needsFlush = false
    /// Closed loop measured by count: answers still to be counted on this connection; sends
    /// stop once those in flight would cover them. nil: no budget.
    private var answersLeft: Int?
    /// When the budget was spent (uptime ns).
    private(set) var budgetSpentAt: UInt64?
    /// Set once the connection takes no new requests (GOAWAY, closed).
    private(set) var refusal: String?
    private(set) var hello: Inferwire_V1_Hello?

    init(
        template: ByteBuffer, maxResponseSize: Int, helloPromise: EventLoopPromise<Inferwire_V1_Hello>,
        bearerToken: String? = nil
    ) {
        self.template = template
        self.maxResponseSize = maxResponseSize
        self.helloPromise = helloPromise
        self.handshake = ClientHandshake(bearerToken: bearerToken)
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

    private var handshake: ClientHandshake
    private func sendPreface(context: ChannelHandlerContext) {
        guard let preface = self.handshake.preface(allocator: context.channel.allocator) else { return }
        context.writeAndFlush(self.wrapOutboundOut(preface), promise: nil)
    }

    /// The most requests this connection may have in flight: the server's limit, if any.
    private func capped(_ n: Int) -> Int {
        let limit = Int(self.hello?.maxConcurrentRequests ?? 0)
        return limit > 0 ? min(n, limit) : n
    }

    // MARK: Control (called on the event loop)

    func startClosed(inFlight: Int) {
        self.stopTimer()
        self.shape = .closed(target: self.capped(inFlight))
        guard self.context != nil, self.refusal == nil else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        while case .closed(let target) = self.shape, self.pending.count < target {
            self.send(intended: now)
        }
        self.flushIfNeeded()
    }

    /// From now on, count `answers` more answers and then stop sending; returns what was
    /// measured before (the switch is one step on the event loop, so no answer is lost or
    /// counted twice).
    func limit(answers: Int) -> WindowTally {
        self.answersLeft = answers
        self.budgetSpentAt = answers <= 0 ? NIODeadline.now().uptimeNanoseconds : nil
        return self.collect()
    }

    /// Whether the answer budget (if any) is spent, or the connection can send no more.
    var budgetSpent: Bool {
        (self.answersLeft.map { $0 <= 0 } ?? false) || self.refusal != nil
    }

    func startOpen(arrivals: ArrivalSchedule, firstDue: UInt64, maxInFlight: Int) {
        self.stopTimer()
        self.shape = .open(OpenSchedule(arrivals: arrivals, nextDue: firstDue, maxInFlight: self.capped(maxInFlight)))
        self.armTimer()
    }

    /// Gives up on the requests still in flight (no answer within the stop timeout): their
    /// late answers are ignored, and the next level starts with nothing in flight. Returns how many.
    func forgetPending() -> Int {
        defer { self.pending.removeAll() }
        return self.pending.count
    }

    /// Stops sending; the returned future completes when every request in flight is answered.
    func stop(promise: EventLoopPromise<Void>) {
        self.stopTimer()
        self.shape = .idle
        self.answersLeft = nil
        if self.pending.isEmpty || self.refusal != nil {
            promise.succeed()
        } else {
            self.drained = promise
        }
    }

    /// Hands over what was measured since the last call and starts a new tally.
    func collect() -> WindowTally {
        defer { self.tally = WindowTally() }
        return self.tally
    }

    // MARK: Sending

    private func send(intended: UInt64) {
        guard let context = self.context else { return }
        var id = self.lastID
        repeat { id &+= 1 } while id == 0 || self.pending[id] != nil
        self.lastID = id
        self.pending[id] = intended
        var frame = self.template
        Frame.setRequestID(id, in: &frame)
        context.write(self.wrapOutboundOut(frame), promise: nil)
        self.needsFlush = true
    }

    private func flushIfNeeded() {
        guard self.needsFlush, let context = self.context else { return }
        self.needsFlush = false
        context.flush()
    }

    private func stopTimer() {
        self.timer?.cancel()
        self.timer = nil
    }

    private func armTimer() {
        guard case .open(let schedule) = self.shape, let context = self.context else { return }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleTask(deadline: .uptimeNanoseconds(schedule.nextDue)) {
            handler.value.sendDue()
        }
    }

    /// Sends every request that has fallen due, then sleeps until the next one.
    private func sendDue() {
        guard case .open(var schedule) = self.shape, self.refusal == nil else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        while schedule.nextDue <= now {
            self.tally.due += 1
            if self.pending.count >= schedule.maxInFlight {
                self.tally.skipped += 1
            } else {
                if now - schedule.nextDue > 1_000_000 { self.tally.late += 1 }
                self.send(intended: schedule.nextDue)
            }
            schedule.nextDue += UInt64(max(1, schedule.arrivals.nextGap() * 1e9))
        }
        self.shape = .open(schedule)
        self.flushIfNeeded()
        self.armTimer()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .frame(let frame):
            self.receive(frame, context: context)
        case .oversized(let header):
            if header.requestID != 0, self.pending.removeValue(forKey: header.requestID) != nil {
                self.tally.errors["RESOURCE_EXHAUSTED", default: 0] += 1
                self.refill()
            }
        case .preface, .httpRequest:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.flushIfNeeded()
        context.fireChannelReadComplete()
    }

    private func receive(_ frame: Frame, context: ChannelHandlerContext) {
        switch self.handshake.receive(frame) {
        case .established(let hello, _)?:
            self.hello = hello
            self.helloPromise.succeed(hello)
            return
        case .failed(let code, let message)?:
            self.refusal = message
            self.helloPromise.fail(InferWireError(code: .init(code), message: message))
            context.close(promise: nil)
            return
        case nil:
            break
        }
        switch frame.header.type {
        case .response, .error:
            guard let intended = self.pending.removeValue(forKey: frame.header.requestID) else { return }
            let now = NIODeadline.now().uptimeNanoseconds
            var payload = frame.payload
            if frame.header.flags.contains(.compressed) {
                payload =
                    (try? PayloadCompression.decompress(
                        payload, limit: self.maxResponseSize, allocator: context.channel.allocator)) ?? ByteBuffer()
            }
            if frame.header.type == .response {
                self.tally.ok += 1
                // Beyond the ceiling counts as the ceiling, so a stall still shows in max and p99.9.
                _ = self.tally.histogram.record(min(now &- intended, latencyCeilingNanos))
                self.tally.versions[modelVersion(inResponse: payload), default: 0] += 1
            } else {
                let status =
                    (try? Inferwire_V1_Status(serializedBytes: [UInt8](buffer: payload))) ?? Inferwire_V1_Status()
                self.tally.errors[InferWireError(status: status).code.description, default: 0] += 1
            }
            self.refill()
        case .goAway:
            self.refusal = "server sent GOAWAY"
            self.stopTimer()
            if self.hello == nil {
                self.helloPromise.fail(InferWireError(code: .unavailable, message: "server sent GOAWAY"))
            }
        case .ping:
            let pong = Frame.encode(
                FrameHeader(payloadLength: 0, type: .pong), payload: frame.payload, allocator: context.channel.allocator
            )
            context.writeAndFlush(self.wrapOutboundOut(pong), promise: nil)
        default:
            break
        }
    }

    /// After an answer: keep the closed loop full, or report the drain.
    private func refill() {
        switch self.shape {
        case .closed(let target):
            if let left = self.answersLeft {
                self.answersLeft = left - 1
                if left == 1 { self.budgetSpentAt = NIODeadline.now().uptimeNanoseconds }
                guard self.pending.count < left - 1 else { return }
            }
            if self.pending.count < target, self.refusal == nil {
                self.send(intended: NIODeadline.now().uptimeNanoseconds)
            }
        case .idle:
            if self.pending.isEmpty, let drained = self.drained {
                self.drained = nil
                drained.succeed()
            }
        case .open:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.refusal = self.refusal ?? "connection closed by the server"
        self.stopTimer()
        if self.hello == nil {
            self.helloPromise.fail(InferWireError(code: .unavailable, message: "connection closed before HELLO"))
        }
        // Requests lost with the connection count as UNAVAILABLE.
        if !self.pending.isEmpty { self.tally.errors["UNAVAILABLE", default: 0] += UInt64(self.pending.count) }
        self.pending.removeAll()
        self.drained?.succeed()
        self.drained = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.refusal = self.refusal ?? "connection failed: \(error)"
        if !self.handshake.isEstablished {
            self.helloPromise.fail(InferWireError(code: .unavailable, message: "connection failed: \(error)"))
        }
        context.close(promise: nil)
    }
}

/// Reads `model_version` (field 2, a varint) from a serialized `InferResponse` without
/// decoding the outputs: the generator counts versions on every answer.
func modelVersion(inResponse payload: ByteBuffer) -> Int64 {
    payload.withUnsafeReadableBytes { bytes -> Int64 in
        var i = 0
        func varint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while i < bytes.count, shift < 64 {
                let b = bytes[i]
                i += 1
                value |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
        while i < bytes.count {
            guard let tag = varint() else { return 0 }
            switch tag & 7 {
            case 0:
                guard let value = varint() else { return 0 }
                if tag >> 3 == 2 { return Int64(bitPattern: value) }
            case 1: i += 8
            case 2:
                guard let length = varint(), length <= UInt64(bytes.count - i) else { return 0 }
                i += Int(length)
            case 5: i += 4
            default: return 0
            }
        }
        return 0
    }
}
