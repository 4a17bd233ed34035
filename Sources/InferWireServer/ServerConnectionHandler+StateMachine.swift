import InferWireCore
import InferWireEngine
import InferWireWire

extension ServerConnectionHandler {
    /// The protocol state of one server connection, apart from any I/O.
    ///
    /// The handler calls one method per event (a frame arrived, a read burst ended, a result
    /// came back, the server is shutting down, …) and performs the action it returns: write
    /// a frame, dispatch a request, flush, close. Keeping the decisions here makes every rule
    /// of the protocol (admission, draining, cancellation, the in-place rule for a lone
    /// request, flush coalescing, backpressure) testable as a plain value.
    ///
    /// Phases: `awaitingPreface → open → draining → closed`. GOAWAY from either side, a
    /// half-closed input or a graceful shutdown drain the connection: no new requests, the
    /// admitted ones finish, then it closes. A stream that cannot be trusted (bad preface,
    /// unknown frame type, reused request id) closes it at once.
    struct StateMachine {
        enum Phase: Equatable {
            case awaitingPreface
            case open
            /// GOAWAY sent or received: no new requests; close once the in-flight ones finish.
            case draining
            /// Output shut down (or closing); input is discarded until the peer closes.
            case closed
        }

        /// An admitted request whose answer has not been written.
        struct InFlight {
            /// Tells this request's result from that of an earlier request with the same id.
            let token: UInt64
            let method: UInt16
            let compressResponse: Bool
            let cancellation: RequestCancellation
        }

        /// A request admitted and ready for the dispatcher.
        struct ReadyRequest {
            var method: UInt16
            var id: UInt32
            var token: UInt64
            var payload: [UInt8]
            var deadline: ContinuousClock.Instant?
            var cancellation: RequestCancellation
        }

        let maxConcurrentRequests: Int
        private(set) var phase = Phase.awaitingPreface
        private var inFlight: [UInt32: InFlight] = [:]
        /// Cancelled requests whose work has not finished: they still count against the
        /// concurrency limit, so REQUEST+CANCEL cannot pile up work.
        private var abandoned: [UInt64: RequestCancellation] = [:]
        private var nextToken: UInt64 = 0
        /// The highest request id admitted, for GOAWAY's `last_request_id`.
        private(set) var highestRequestID: UInt32 = 0
        /// The peer will send nothing more.
        private(set) var inputClosed = false
        private var readingBurst = false
        /// The first request of the current read burst, not yet dispatched: if the burst
        /// brings no other, it may run in place (no queue to join, nothing to batch it with);
        /// if another follows, both are queued so the batcher can merge them.
        private var heldRequest: ReadyRequest?
        private var requestsThisBurst = 0
        private var needsFlush = false
        private var readPending = false
        /// After a GOAWAY of its own (idle, or shutting down), the connection stays open for a
        /// grace period so that requests the client sent before reading it are answered
        /// UNAVAILABLE (never run, safe to retry elsewhere) rather than lost in a close.
        private var holdingAfterGoAway = false
        /// Requests started since the last idle check, and checks in a row that found none.
        private var requestsSinceIdleCheck = 0
        private var quietIdleChecks = 0

        /// Where the connection stands with authentication (PROTOCOL.md section 1b).
        enum Credentials: Equatable {
            /// The server requires none: every request acts as ``Principal/anonymous``.
            case notRequired
            /// Required, and not presented yet.
            case awaiting
            /// An AUTH frame is being checked; input is held until it is decided.
            case verifying
            case authenticated(Principal)
            /// The principal's credentials expired; a fresh AUTH is needed.
            case expired(Principal)
        }

        private(set) var credentials: Credentials

        init(maxConcurrentRequests: Int, authenticationRequired: Bool = false) {
            self.maxConcurrentRequests = maxConcurrentRequests
            self.credentials = authenticationRequired ? .awaiting : .notRequired
        }

        /// Requests admitted and not yet answered, cancelled ones still running included.
        var occupied: Int { self.inFlight.count + self.abandoned.count }

        /// Whether inbound bytes and frames are still acted on.
        var isAcceptingInput: Bool { self.phase != .closed }

        // MARK: Reading

        /// A read delivered bytes. Returns false when the connection is closed and they are discarded.
        mutating func readStarted() -> Bool {
            guard self.phase != .closed else { return false }
            self.readingBurst = true
            return true
        }

        /// What to do when a read burst ends, before its writes are flushed.
        struct OnReadComplete {
            /// The burst's only request, to dispatch now.
            var dispatch: ReadyRequest?
            /// True when the burst brought no other request: it may run in place.
            var mayRunInPlace: Bool
        }

        /// The read burst is ending: releases the held request. Its answer, if computed at
        /// once, joins the burst's writes; ``burstEnded()`` then says whether to flush.
        mutating func readComplete() -> OnReadComplete {
            let held = self.heldRequest
            self.heldRequest = nil
            let action = OnReadComplete(dispatch: held, mayRunInPlace: self.requestsThisBurst == 1)
            self.requestsThisBurst = 0
            return action
        }

        /// The read burst is over. Returns true when frames were written during it and
        /// wait for their one flush.
        mutating func burstEnded() -> Bool {
            self.readingBurst = false
            guard self.needsFlush else { return false }
            self.needsFlush = false
            return true
        }

        // MARK: Handshake

        enum OnPreface {
            /// Answer with HELLO: the connection is open.
            case sendHello
            case close(OnFatal)
        }

        mutating func prefaceReceived(_ preface: Preface) -> OnPreface {
            guard preface.minVersion <= preface.maxVersion else {
                let message =
                    "preface range is inverted: lowest version \(preface.minVersion) is above highest \(preface.maxVersion)"
                return .close(self.fail(code: .invalidArgument, message: message))
            }
            guard preface.minVersion <= Preface.currentVersion, Preface.currentVersion <= preface.maxVersion else {
                let message =
                    "client speaks protocol versions \(preface.minVersion)–\(preface.maxVersion); this server speaks \(Preface.currentVersion)"
                return .close(self.fail(code: .failedPrecondition, message: message))
            }
            self.phase = .open
            return .sendHello
        }

        // MARK: Authentication

        /// Who the connection's requests act as; nil while it has no valid credentials.
        var principal: Principal? {
            switch self.credentials {
            case .notRequired: .anonymous
            case .authenticated(let principal): principal
            case .awaiting, .verifying, .expired: nil
            }
        }

        /// Whether frames must wait, unread, for an AUTH under check.
        var isHoldingInput: Bool { self.credentials == .verifying }

        /// Why a request cannot run for lack of credentials; nil when it may.
        var missingCredentials: InferWireError? {
            switch self.credentials {
            case .notRequired, .authenticated: nil
            case .awaiting, .verifying:
                InferWireError(
                    code: .unauthenticated,
                    message:
                        "this server requires authentication: send an AUTH frame with a bearer token after the preface (PROTOCOL.md section 1b)"
                )
            case .expired(let principal):
                InferWireError(
                    code: .unauthenticated,
                    message:
                        "the credentials of '\(principal.name)' expired at Unix time \(principal.expiresAt ?? 0); send a fresh AUTH frame"
                )
            }
        }

        enum OnAuth: Equatable {
            /// No authentication on this server: answer with this principal at once.
            case answer(Principal)
            /// Check the credentials; hold every later frame until they are decided.
            case verify
        }

        mutating func authReceived() -> OnAuth {
            guard self.credentials != .notRequired else { return .answer(.anonymous) }
            self.credentials = .verifying
            return .verify
        }

        /// The credentials were accepted. Returns true when a read deferred while they were
        /// checked must be issued now.
        mutating func authSucceeded(_ principal: Principal) -> Bool {
            guard self.credentials == .verifying else { return false }
            self.credentials = .authenticated(principal)
            guard self.readPending else { return false }
            self.readPending = false
            return true
        }

        /// The credentials were refused: the connection ends with GOAWAY UNAUTHENTICATED.
        mutating func authFailed(_ error: InferWireError) -> OnFatal {
            self.fail(code: .unauthenticated, message: error.message)
        }

        /// A verified TLS client certificate named a known principal.
        mutating func certificateAuthenticated(_ principal: Principal) {
            if self.credentials == .awaiting { self.credentials = .authenticated(principal) }
        }

        /// The expiry timer of `principal`'s credentials fired.
        mutating func credentialsExpired(_ principal: Principal) {
            if self.credentials == .authenticated(principal) { self.credentials = .expired(principal) }
        }

        // MARK: Requests

        enum OnRequestHeader {
            /// The request may start.
            case admit
            /// Answer it with this error; the connection carries on.
            case reject(InferWireError)
            /// The stream cannot be trusted: GOAWAY and close.
            case close(OnFatal)
        }

        /// Whether a REQUEST (or an oversized REQUEST's header) may start work.
        mutating func requestReceived(_ header: FrameHeader) -> OnRequestHeader {
            let id = header.requestID
            guard id != 0 else {
                return .close(self.fail(code: .invalidArgument, message: "request id 0 is reserved for the connection"))
            }
            // Responses are matched by id, so a reused one would corrupt the peer's matching.
            guard self.inFlight[id] == nil else {
                return .close(self.fail(code: .invalidArgument, message: "request id \(id) is already in flight"))
            }
            guard self.phase == .open else {
                return .reject(
                    InferWireError(
                        code: .unavailable, message: "connection is draining (GOAWAY sent); retry on a new connection"))
            }
            self.highestRequestID = max(self.highestRequestID, id)
            guard self.occupied < self.maxConcurrentRequests else {
                return .reject(
                    InferWireError(
                        code: .resourceExhausted,
                        message: "more than \(self.maxConcurrentRequests) requests in flight on this connection"))
            }
            return .admit
        }

        enum OnRequestReady {
            /// Held until the burst ends (it may run in place if nothing else comes).
            case hold
            /// Dispatch this request (queued, never in place).
            case dispatch(ReadyRequest)
            /// A second request joined the burst: dispatch the held one, then this one, both queued.
            case dispatchBoth(held: ReadyRequest, current: ReadyRequest)
        }

        /// An admitted request's payload is ready: it is in flight from now on.
        mutating func requestReady(
            _ header: FrameHeader, payload: [UInt8], deadline: ContinuousClock.Instant?
        ) -> OnRequestReady {
            self.nextToken &+= 1
            let cancellation = RequestCancellation()
            self.inFlight[header.requestID] = InFlight(
                token: self.nextToken, method: header.method,
                compressResponse: header.flags.contains(.compressResponse),
                cancellation: cancellation)
            let request = ReadyRequest(
                method: header.method, id: header.requestID, token: self.nextToken, payload: payload,
                deadline: deadline,
                cancellation: cancellation)
            self.requestsThisBurst += 1
            self.requestsSinceIdleCheck &+= 1
            if self.readingBurst && self.requestsThisBurst == 1 {
                self.heldRequest = request
                return .hold
            }
            if let held = self.heldRequest {
                self.heldRequest = nil
                return .dispatchBoth(held: held, current: request)
            }
            return .dispatch(request)
        }

        enum OnCancel {
            case none
            /// Answer the request CANCELLED; its work is skipped or ignored.
            case answerCancelled(method: UInt16)
        }

        mutating func cancelReceived(_ id: UInt32) -> OnCancel {
            guard let entry = self.inFlight.removeValue(forKey: id) else { return .none }
            entry.cancellation.cancel()
            self.abandoned[entry.token] = entry.cancellation
            return .answerCancelled(method: entry.method)
        }

        enum OnResult {
            /// Nobody is waiting: it was cancelled, or the connection closed.
            case drop
            /// Write the answer.
            case write(method: UInt16, compressResponse: Bool)
        }

        /// A request's result came back.
        mutating func resultReceived(id: UInt32, token: UInt64) -> OnResult {
            guard let entry = self.inFlight[id], entry.token == token else {
                // Cancelled, or the connection closed meanwhile: its work is over now.
                self.abandoned.removeValue(forKey: token)
                return .drop
            }
            self.inFlight.removeValue(forKey: id)
            guard self.phase != .closed else { return .drop }
            return .write(method: entry.method, compressResponse: entry.compressResponse)
        }

        // MARK: Writing

        /// A frame was written. Returns true when it must be flushed now: outside a read
        /// burst; within one, a single flush comes when the burst ends.
        mutating func frameWritten() -> Bool {
            if self.readingBurst {
                self.needsFlush = true
                return false
            }
            return true
        }

        /// Results from execution threads are delivered like a read burst, so that a batch
        /// of answers costs one flush. Returns whether a burst was already under way.
        mutating func deliveryStarted() -> Bool {
            let wasReading = self.readingBurst
            self.readingBurst = true
            return wasReading
        }

        /// Ends a delivery; returns true when its writes must be flushed now.
        mutating func deliveryFinished(wasReading: Bool) -> Bool {
            self.readingBurst = wasReading
            guard !wasReading, self.needsFlush else { return false }
            self.needsFlush = false
            return true
        }

        // MARK: Timers

        enum OnHandshakeTimeout: Equatable {
            case none
            /// No complete preface: close without a frame (the peer has not shown it speaks
            /// the protocol).
            case close
            /// Preface, but no accepted credentials: GOAWAY UNAUTHENTICATED, then close.
            case unauthenticated(OnFatal)
        }

        /// The handshake timer fired: the preface, and credentials where required, are due.
        mutating func handshakeTimedOut(after timeout: Duration) -> OnHandshakeTimeout {
            if self.phase == .awaitingPreface {
                self.phase = .closed
                return .close
            }
            switch self.credentials {
            case .awaiting, .verifying:
                guard self.phase != .closed else { return .none }
                return .unauthenticated(
                    self.fail(
                        code: .unauthenticated,
                        message: "no accepted credentials within the \(timeout) handshake timeout"))
            case .notRequired, .authenticated, .expired:
                return .none
            }
        }

        enum OnIdleCheck: Equatable {
            case none
            /// Idle: send GOAWAY naming the last admitted request, then drain and close.
            case goAway(lastRequestID: UInt32)
        }

        /// Runs every half idle timeout. Two checks in a row that find no request started
        /// and none in flight make the connection idle, so it goes after one to one and a
        /// half idle timeouts without work; a counter per request is all the request path pays.
        mutating func idleCheck() -> OnIdleCheck {
            guard self.phase == .open else { return .none }
            guard self.requestsSinceIdleCheck == 0, self.inFlight.isEmpty, self.abandoned.isEmpty else {
                self.requestsSinceIdleCheck = 0
                self.quietIdleChecks = 0
                return .none
            }
            self.quietIdleChecks += 1
            guard self.quietIdleChecks >= 2 else { return .none }
            self.phase = .draining
            self.holdingAfterGoAway = true
            return .goAway(lastRequestID: self.highestRequestID)
        }

        /// The grace after the server's GOAWAY ended: the connection may close once drained.
        mutating func goAwayGraceEnded() {
            self.holdingAfterGoAway = false
        }

        // MARK: Backpressure

        /// The pipeline asks for more input. Returns true to read now; false defers it until
        /// the socket can take output again, so a peer that does not read cannot grow memory.
        mutating func readRequested(writable: Bool) -> Bool {
            if writable && !self.isHoldingInput { return true }
            self.readPending = true
            return false
        }

        /// Returns true when a deferred read must be issued now.
        mutating func writabilityChanged(writable: Bool) -> Bool {
            guard writable, self.readPending, !self.isHoldingInput else { return false }
            self.readPending = false
            return true
        }

        // MARK: Closing

        /// Why and how to end a connection at once.
        struct OnFatal: Equatable {
            var code: InferWireError.Code
            var message: String
            var lastRequestID: UInt32
        }

        /// Ends a connection whose byte stream can no longer be trusted; every request in
        /// flight is withdrawn. The caller sends GOAWAY with these details and shuts down.
        mutating func fail(code: InferWireError.Code, message: String) -> OnFatal {
            self.phase = .closed
            self.abandonAll()
            return OnFatal(code: code, message: message, lastRequestID: self.highestRequestID)
        }

        /// Whether a fatal error still needs a GOAWAY (false once closed).
        var canSendGoAway: Bool { self.phase != .closed }

        /// The peer sent HTTP to this port: answer it and close.
        mutating func httpReceived() {
            self.phase = .closed
        }

        /// The peer sent GOAWAY: answer it with ours (once), finish what it asked, then
        /// close. Requests read after it, in the same read burst, are answered UNAVAILABLE
        /// before the connection closes at the burst's end.
        mutating func goAwayReceived() -> OnQuiesce {
            guard self.phase == .open else { return .none }
            self.phase = .draining
            return .sendGoAway(lastRequestID: self.highestRequestID)
        }

        enum OnQuiesce {
            case none
            /// No handshake yet: close at once.
            case close
            /// Send GOAWAY naming the last admitted request, then drain.
            case sendGoAway(lastRequestID: UInt32)
        }

        /// The server is shutting down gracefully.
        mutating func quiesce() -> OnQuiesce {
            switch self.phase {
            case .awaitingPreface:
                self.phase = .closed
                return .close
            case .open:
                self.phase = .draining
                self.holdingAfterGoAway = true
                return .sendGoAway(lastRequestID: self.highestRequestID)
            case .draining, .closed:
                return .none
            }
        }

        enum OnInputClosed {
            /// The peer acknowledged our shutdown: finish closing.
            case close
            /// Decode what is left (a partial frame is an error), answer it, then close.
            case finishInput
        }

        mutating func inputClosedByPeer() -> OnInputClosed {
            if self.phase == .closed { return .close }
            self.inputClosed = true
            return .finishInput
        }

        /// Returns true when the connection has nothing left to do and must close now: it is
        /// draining (or its input ended) and every admitted request has been answered.
        mutating func closeIfDrained() -> Bool {
            guard (self.phase == .draining && !self.holdingAfterGoAway) || self.inputClosed, self.inFlight.isEmpty,
                self.phase != .closed
            else {
                return false
            }
            self.phase = .closed
            self.needsFlush = false
            return true
        }

        enum OnShutdown {
            /// Nothing more can arrive, so closing cannot provoke a reset: close now.
            case closeNow
            /// Shut the output, keep reading (and discarding) until the peer's FIN, with a
            /// time limit: closing with unread input would reset the connection and destroy
            /// the last frames before the peer reads them.
            case shutOutputAndLinger
        }

        mutating func shutdownStarted() -> OnShutdown {
            if self.inputClosed { return .closeNow }
            self.readPending = false
            return .shutOutputAndLinger
        }

        /// The channel went away (or failed): withdraw every request so queued work for a
        /// gone peer is skipped. Returns how many were in flight.
        mutating func channelClosed() -> Int {
            // Nobody is left to answer a held request either (abandonAll cancels it).
            self.heldRequest = nil
            let count = self.inFlight.count
            self.phase = .closed
            self.abandonAll()
            return count
        }

        private mutating func abandonAll() {
            for entry in self.inFlight.values { entry.cancellation.cancel() }
            self.inFlight.removeAll()
        }
    }
}
