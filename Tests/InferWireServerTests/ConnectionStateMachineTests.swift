import InferWireCore
import InferWireEngine
import InferWireWire
import Logging
import Synchronization
import Testing

@testable import InferWireServer

/// The connection's rules as a plain value: no channel, no threads.
@Suite("Connection state machine")
struct ConnectionStateMachineTests {
    typealias Machine = ServerConnectionHandler.StateMachine

    func request(_ id: UInt32, method: UInt16 = 6, flags: FrameFlags = []) -> FrameHeader {
        FrameHeader(payloadLength: 0, type: .request, flags: flags, method: method, requestID: id)
    }

    /// A machine past the handshake.
    func open(limit: Int = 4) -> Machine {
        var machine = Machine(maxConcurrentRequests: limit)
        guard case .sendHello = machine.prefaceReceived(Preface()) else { fatalError("handshake refused") }
        return machine
    }

    /// Admits and readies a request outside a read burst; returns its token.
    @discardableResult
    func start(_ machine: inout Machine, _ id: UInt32, flags: FrameFlags = []) -> UInt64 {
        guard case .admit = machine.requestReceived(self.request(id, flags: flags)) else { fatalError("not admitted") }
        guard
            case .dispatch(let ready) = machine.requestReady(self.request(id, flags: flags), payload: [], deadline: nil)
        else {
            fatalError("not dispatched")
        }
        return ready.token
    }

    @Test("a preface in the server's version range opens the connection; one outside it closes it with the reason")
    func preface() {
        var machine = Machine(maxConcurrentRequests: 4)
        #expect(machine.phase == .awaitingPreface)
        guard case .sendHello = machine.prefaceReceived(Preface()) else {
            Issue.record("a current preface was refused")
            return
        }
        #expect(machine.phase == .open)
        var old = Machine(maxConcurrentRequests: 4)
        guard case .close(let fatal) = old.prefaceReceived(Preface(minVersion: 2, maxVersion: 3)) else {
            Issue.record("a preface for versions 2–3 was accepted")
            return
        }
        #expect(fatal.code == .failedPrecondition)
        #expect(fatal.message == "client speaks protocol versions 2–3; this server speaks 1")
        #expect(old.phase == .closed)
        #expect(!old.isAcceptingInput)
    }

    @Test("request id 0 and an id already in flight end the connection; the last admitted id is reported")
    func untrustworthyIDs() {
        var machine = self.open()
        self.start(&machine, 7)
        guard case .close(let reused) = machine.requestReceived(self.request(7)) else {
            Issue.record("a reused id was not fatal")
            return
        }
        #expect(reused.code == .invalidArgument)
        #expect(reused.message == "request id 7 is already in flight")
        #expect(reused.lastRequestID == 7)
        var zero = self.open()
        guard case .close(let fatal) = zero.requestReceived(self.request(0)) else {
            Issue.record("request id 0 was accepted")
            return
        }
        #expect(fatal.message == "request id 0 is reserved for the connection")
    }

    @Test("past the concurrency limit a request is refused with RESOURCE_EXHAUSTED, cancelled work still counting")
    func limit() {
        var machine = self.open(limit: 2)
        self.start(&machine, 1)
        self.start(&machine, 2)
        guard case .reject(let error) = machine.requestReceived(self.request(3)) else {
            Issue.record("a third request was admitted under a limit of 2")
            return
        }
        #expect(error.code == .resourceExhausted)
        // A cancelled request frees no slot until its work is over.
        #expect(machine.occupied == 2)
        guard case .answerCancelled = machine.cancelReceived(1) else {
            Issue.record("cancel of a request in flight was ignored")
            return
        }
        #expect(machine.occupied == 2)
        guard case .reject = machine.requestReceived(self.request(3)) else {
            Issue.record("a slot held by cancelled work was reused")
            return
        }
    }

    @Test("a late result for a cancelled request is dropped, even when its id was reused, and frees its slot")
    func lateResult() {
        var machine = self.open(limit: 2)
        let first = self.start(&machine, 5)
        _ = machine.cancelReceived(5)
        // The id is free again for the client.
        let second = self.start(&machine, 5)
        #expect(first != second)
        guard case .drop = machine.resultReceived(id: 5, token: first) else {
            Issue.record("the cancelled request's result answered the newer request")
            return
        }
        #expect(machine.occupied == 1)
        guard case .write(let method, _) = machine.resultReceived(id: 5, token: second) else {
            Issue.record("the newer request's result was dropped")
            return
        }
        #expect(method == 6)
        #expect(machine.occupied == 0)
        // A CANCEL after the answer changes nothing.
        guard case .none = machine.cancelReceived(5) else {
            Issue.record("cancel of an answered request was acted on")
            return
        }
    }

    @Test("a lone request in a read burst is held and may run in place; a second one sends both to the queue")
    func burst() {
        var machine = self.open()
        let outcome1 = machine.readStarted()
        #expect(outcome1)
        let outcome2 = machine.requestReceived(self.request(1))
        #expect(outcome2.isAdmit)
        guard case .hold = machine.requestReady(self.request(1), payload: [], deadline: nil) else {
            Issue.record("the burst's first request was not held")
            return
        }
        let lone = machine.readComplete()
        #expect(lone.dispatch?.id == 1)
        #expect(lone.mayRunInPlace)
        let outcome3 = machine.burstEnded()
        #expect(!outcome3)

        let outcome4 = machine.readStarted()
        #expect(outcome4)
        let outcome5 = machine.requestReceived(self.request(2))
        #expect(outcome5.isAdmit)
        _ = machine.requestReady(self.request(2), payload: [], deadline: nil)
        let outcome6 = machine.requestReceived(self.request(3))
        #expect(outcome6.isAdmit)
        guard
            case .dispatchBoth(let held, let current) = machine.requestReady(
                self.request(3), payload: [], deadline: nil)
        else {
            Issue.record("a second request did not release the held one")
            return
        }
        #expect(held.id == 2 && current.id == 3)
        let outcome7 = machine.readComplete()
        #expect(outcome7.dispatch == nil)
        _ = machine.burstEnded()
    }

    @Test("writes during a read burst wait for one flush at its end; writes outside one flush at once")
    func flushes() {
        var machine = self.open()
        let outcome8 = machine.frameWritten()
        #expect(outcome8)
        _ = machine.readStarted()
        let outcome9 = machine.frameWritten()
        #expect(!outcome9)
        let outcome10 = machine.frameWritten()
        #expect(!outcome10)
        _ = machine.readComplete()
        let outcome11 = machine.burstEnded()
        #expect(outcome11)
        // Results delivered from execution threads are one burst too.
        let wasReading = machine.deliveryStarted()
        let outcome12 = machine.frameWritten()
        #expect(!outcome12)
        let outcome13 = machine.deliveryFinished(wasReading: wasReading)
        #expect(outcome13)
        // A delivery inside a read burst leaves the flush to the burst.
        _ = machine.readStarted()
        let nested = machine.deliveryStarted()
        let outcome14 = machine.frameWritten()
        #expect(!outcome14)
        let outcome15 = machine.deliveryFinished(wasReading: nested)
        #expect(!outcome15)
        _ = machine.readComplete()
        let outcome16 = machine.burstEnded()
        #expect(outcome16)
    }

    @Test(
        "graceful shutdown sends GOAWAY, refuses new requests, and closes once the last answer is out and the grace ends"
    )
    func quiesce() {
        var machine = self.open()
        let token = self.start(&machine, 3)
        guard case .sendGoAway(let last) = machine.quiesce() else {
            Issue.record("no GOAWAY on shutdown")
            return
        }
        #expect(last == 3)
        let outcome17 = machine.closeIfDrained()
        #expect(!outcome17)
        guard case .reject(let error) = machine.requestReceived(self.request(4)) else {
            Issue.record("a request was admitted while draining")
            return
        }
        #expect(error.code == .unavailable)
        guard case .write = machine.resultReceived(id: 3, token: token) else {
            Issue.record("the in-flight answer was not written while draining")
            return
        }
        // Drained, yet held for the grace period: a request that crossed the GOAWAY gets
        // UNAVAILABLE (safe to send elsewhere) rather than a closed connection.
        let held = machine.closeIfDrained()
        #expect(!held)
        guard case .reject(let crossed) = machine.requestReceived(self.request(5)) else {
            Issue.record("a request that crossed the GOAWAY was admitted")
            return
        }
        #expect(crossed.code == .unavailable)
        machine.goAwayGraceEnded()
        let outcome18 = machine.closeIfDrained()
        #expect(outcome18)
        #expect(machine.phase == .closed)
        guard case .none = machine.quiesce() else {
            Issue.record("a closed connection acted on shutdown")
            return
        }
        var fresh = Machine(maxConcurrentRequests: 1)
        guard case .close = fresh.quiesce() else {
            Issue.record("a connection without a handshake was not closed at once")
            return
        }
    }

    @Test("the peer's GOAWAY or end of input drains the connection; after our shutdown its FIN closes it")
    func peerEnds() {
        var machine = self.open()
        let token = self.start(&machine, 1)
        guard case .sendGoAway(let last) = machine.goAwayReceived() else {
            Issue.record("the client's GOAWAY was not answered with ours")
            return
        }
        #expect(last == 1)
        #expect(machine.phase == .draining)
        guard case .none = machine.goAwayReceived() else {
            Issue.record("a second GOAWAY from the client was answered again")
            return
        }
        let outcome19 = machine.closeIfDrained()
        #expect(!outcome19)
        _ = machine.resultReceived(id: 1, token: token)
        let outcome20 = machine.closeIfDrained()
        #expect(outcome20)

        var halfClosed = self.open()
        guard case .finishInput = halfClosed.inputClosedByPeer() else {
            Issue.record("end of input before shutdown did not finish the input")
            return
        }
        let outcome21 = halfClosed.closeIfDrained()
        #expect(outcome21)
        guard case .closeNow = halfClosed.shutdownStarted() else {
            Issue.record("a connection whose input ended lingered")
            return
        }
        guard case .close = halfClosed.inputClosedByPeer() else {
            Issue.record("the peer's FIN after shutdown did not close")
            return
        }
        var lingering = self.open()
        _ = lingering.quiesce()
        lingering.goAwayGraceEnded()
        let outcome22 = lingering.closeIfDrained()
        #expect(outcome22)
        guard case .shutOutputAndLinger = lingering.shutdownStarted() else {
            Issue.record("a connection with open input closed without lingering")
            return
        }
    }

    @Test("when the channel goes, every request in flight is cancelled, the held one too")
    func channelClosed() {
        var machine = self.open()
        _ = machine.readStarted()
        _ = machine.requestReceived(self.request(1))
        _ = machine.requestReady(self.request(1), payload: [], deadline: nil)
        _ = machine.requestReceived(self.request(2))
        guard
            case .dispatchBoth(let first, let second) = machine.requestReady(
                self.request(2), payload: [], deadline: nil)
        else {
            Issue.record("two requests in a burst were not both dispatched")
            return
        }
        _ = machine.requestReceived(self.request(3))
        guard case .dispatch(let third) = machine.requestReady(self.request(3), payload: [], deadline: nil) else {
            Issue.record("a third request in the burst was not dispatched")
            return
        }
        let outcome23 = machine.channelClosed()
        #expect(outcome23 == 3)
        #expect([first, second, third].allSatisfy { $0.cancellation.isCancelled })
        #expect(machine.phase == .closed)
        let outcome24 = machine.readComplete()
        #expect(outcome24.dispatch == nil)
        let outcome25 = machine.readStarted()
        #expect(!outcome25)
    }

    @Test("a lone request held at the end of the input is cancelled with the channel")
    func heldRequestCancelled() {
        var machine = self.open()
        _ = machine.readStarted()
        _ = machine.requestReceived(self.request(9))
        _ = machine.requestReady(self.request(9), payload: [], deadline: nil)
        let outcome26 = machine.channelClosed()
        #expect(outcome26 == 1)
        let outcome27 = machine.readComplete()
        #expect(outcome27.dispatch == nil)
    }

    @Test("a stalled reader defers reads until the socket takes output again")
    func backpressure() {
        var machine = self.open()
        let outcome28 = machine.readRequested(writable: true)
        #expect(outcome28)
        let outcome29 = machine.readRequested(writable: false)
        #expect(!outcome29)
        let outcome30 = machine.writabilityChanged(writable: false)
        #expect(!outcome30)
        let outcome31 = machine.writabilityChanged(writable: true)
        #expect(outcome31)
        let outcome32 = machine.writabilityChanged(writable: true)
        #expect(!outcome32)
    }
}

extension ServerConnectionHandler.StateMachine.OnRequestHeader {
    var isAdmit: Bool {
        if case .admit = self { return true }
        return false
    }
}

@Suite("Connection timers, limits and rejection logs")
struct ConnectionHardeningTests {
    typealias Machine = ServerConnectionHandler.StateMachine

    @Test("the handshake timer closes only a connection still waiting for its preface")
    func handshakeTimer() {
        var waiting = Machine(maxConcurrentRequests: 1)
        let closes = waiting.handshakeTimedOut(after: .seconds(10))
        #expect(closes == .close)
        #expect(waiting.phase == .closed)
        var open = Machine(maxConcurrentRequests: 1)
        _ = open.prefaceReceived(Preface())
        let stays = open.handshakeTimedOut(after: .seconds(10))
        #expect(stays == .none)
        #expect(open.phase == .open)
    }

    @Test("where authentication is required, the handshake timer also ends a connection without accepted credentials")
    func handshakeTimerAwaitsCredentials() {
        var machine = Machine(maxConcurrentRequests: 1, authenticationRequired: true)
        _ = machine.prefaceReceived(Preface())
        guard case .unauthenticated(let fatal) = machine.handshakeTimedOut(after: .seconds(10)) else {
            Issue.record("no GOAWAY for a connection without credentials")
            return
        }
        #expect(fatal.code == .unauthenticated)
        #expect(fatal.message.contains("no accepted credentials within"))

        var authenticated = Machine(maxConcurrentRequests: 1, authenticationRequired: true)
        _ = authenticated.prefaceReceived(Preface())
        _ = authenticated.authReceived()
        _ = authenticated.authSucceeded(Principal(name: "svc", roles: .infer))
        #expect(authenticated.handshakeTimedOut(after: .seconds(10)) == .none)
    }

    @Test("credentials: requests wait for them, input is held while an AUTH is checked, expiry needs a fresh AUTH")
    func credentials() {
        var open = Machine(maxConcurrentRequests: 1)
        #expect(open.principal == .anonymous)
        let answer = open.authReceived()
        #expect(answer == .answer(.anonymous))
        #expect(open.missingCredentials == nil)

        var machine = Machine(maxConcurrentRequests: 1, authenticationRequired: true)
        _ = machine.prefaceReceived(Preface())
        #expect(machine.principal == nil)
        #expect(machine.missingCredentials?.code == .unauthenticated)
        #expect(machine.missingCredentials?.message.contains("send an AUTH frame") == true)
        let verify = machine.authReceived()
        #expect(verify == .verify)
        #expect(machine.isHoldingInput)
        // While the AUTH is checked, reads wait even on a writable socket, and resume after.
        let readsWhileChecking = machine.readRequested(writable: true)
        #expect(!readsWhileChecking)
        let principal = Principal(name: "svc", roles: .infer, expiresAt: 1_900_000_000)
        let deferredRead = machine.authSucceeded(principal)
        #expect(deferredRead)
        #expect(!machine.isHoldingInput)
        #expect(machine.principal == principal)
        let readsAfter = machine.readRequested(writable: true)
        #expect(readsAfter)

        machine.credentialsExpired(Principal(name: "other", roles: .infer))
        #expect(machine.principal == principal)
        machine.credentialsExpired(principal)
        #expect(machine.principal == nil)
        #expect(machine.missingCredentials?.message.contains("expired") == true)
        let again = machine.authReceived()
        #expect(again == .verify)
        let noDeferredRead = machine.authSucceeded(Principal(name: "svc", roles: .infer))
        #expect(!noDeferredRead)
        #expect(machine.principal?.name == "svc")

        var refused = Machine(maxConcurrentRequests: 1, authenticationRequired: true)
        _ = refused.prefaceReceived(Preface())
        _ = refused.authReceived()
        let fatal = refused.authFailed(InferWireError(code: .unauthenticated, message: "JWT rejected: it expired"))
        #expect(fatal.code == .unauthenticated)
        #expect(fatal.message == "JWT rejected: it expired")
        #expect(!refused.isAcceptingInput)

        var byCertificate = Machine(maxConcurrentRequests: 1, authenticationRequired: true)
        byCertificate.certificateAuthenticated(Principal(name: "ci-runner", roles: .manage))
        #expect(byCertificate.principal?.name == "ci-runner")
    }

    @Test("two idle checks in a row without requests make the connection idle; a request or work in flight resets them")
    func idleChecks() {
        var machine = Machine(maxConcurrentRequests: 4)
        _ = machine.prefaceReceived(Preface())
        let first = machine.idleCheck()
        #expect(first == .none)
        // A request between checks: the count starts again.
        let header = FrameHeader(payloadLength: 0, type: .request, method: 6, requestID: 1)
        _ = machine.requestReceived(header)
        guard case .dispatch(let request) = machine.requestReady(header, payload: [], deadline: nil) else {
            Issue.record("request not dispatched")
            return
        }
        let busy = machine.idleCheck()
        #expect(busy == .none)
        // Still in flight: not idle however many checks pass.
        for _ in 0..<3 {
            let check = machine.idleCheck()
            #expect(check == .none)
        }
        _ = machine.resultReceived(id: 1, token: request.token)
        let quiet = machine.idleCheck()
        #expect(quiet == .none)
        let idle = machine.idleCheck()
        #expect(idle == .goAway(lastRequestID: 1))
        #expect(machine.phase == .draining)
        // It holds for the grace period, answering stragglers UNAVAILABLE, then closes.
        let holds = machine.closeIfDrained()
        #expect(!holds)
        let straggler = machine.requestReceived(FrameHeader(payloadLength: 0, type: .request, method: 6, requestID: 2))
        guard case .reject(let refusal) = straggler else {
            Issue.record("a request after the idle GOAWAY was not refused")
            return
        }
        #expect(refusal.code == .unavailable)
        machine.goAwayGraceEnded()
        let closes = machine.closeIfDrained()
        #expect(closes)
    }

    @Test("connections are limited in all and per client address, and closing one frees its place")
    func limits() {
        var state = ConnectionLimiter.State(maxConnections: 3, maxPerAddress: 2)
        #expect(state.open(from: "10.0.0.1") == .admit)
        #expect(state.open(from: "10.0.0.1") == .admit)
        guard case .reject(let perAddress) = state.open(from: "10.0.0.1") else {
            Issue.record("a third connection from one address was admitted")
            return
        }
        #expect(perAddress.contains("from 10.0.0.1 (limit 2)"))
        #expect(state.open(from: "10.0.0.2") == .admit)
        guard case .reject(let total) = state.open(from: "10.0.0.3") else {
            Issue.record("a fourth connection was admitted under a limit of 3")
            return
        }
        #expect(total.contains("limit 3"))
        state.close(from: "10.0.0.1")
        #expect(state.total == 2)
        #expect(state.open(from: "10.0.0.3") == .admit)
        // A close for an address never admitted changes nothing.
        state.close(from: "10.9.9.9")
        #expect(state.total == 3)
    }

    @Test("a flood of one kind of rejection logs one line per interval, then says how many were left out")
    func rateLimitedLog() {
        let lines = CapturedLog()
        let clock = Mutex(ContinuousClock.now)
        let log = RateLimitedLog(
            logger: lines.logger, interval: .seconds(10), now: { clock.withLock { $0 } })
        #expect(log.log("http", "peer sent HTTP"))
        for _ in 0..<500 { log.log("http", "peer sent HTTP") }
        // Another kind has its own allowance.
        #expect(log.log("protocol-error", "bad frame"))
        clock.withLock { $0 += .seconds(11) }
        #expect(log.log("http", "peer sent HTTP"))
        #expect(
            lines.messages == [
                "peer sent HTTP", "bad frame", "peer sent HTTP (and 500 more like it since the last such line)",
            ])
    }
}
