/// How a ``BalancedClient`` chooses the endpoint for a call, as a plain value: power of two
/// choices over the calls each endpoint has in flight, skipping endpoints in connect back-off.
package struct EndpointPicker {
    /// What the picker knows about one endpoint.
    package struct Candidate: Sendable, Hashable {
        /// Calls this client has in flight there (sent, or waiting for its connection).
        package var outstanding: Int
        /// Until when it is skipped after a failed connect; nil when it is not.
        package var backingOffUntil: ContinuousClock.Instant?
        /// Whether the current call already tried it.
        package var tried: Bool

        package init(outstanding: Int, backingOffUntil: ContinuousClock.Instant? = nil, tried: Bool = false) {
            self.outstanding = outstanding
            self.backingOffUntil = backingOffUntil
            self.tried = tried
        }
    }

    /// The index of the candidate to call next; nil when there are none.
    ///
    /// 1. Endpoints the call has not tried yet come first; once it has tried all, any may be
    ///    tried again.
    /// 2. Of those, endpoints not backing off after a failed connect. When every one of them
    ///    is backing off, the one whose back-off ends first is tried anyway: a fleet that is
    ///    wholly down is still probed, and calls succeed as soon as a server is back.
    /// 3. Of those, two drawn at random; the one with fewer calls in flight wins (the first
    ///    drawn on a tie).
    package static func pick(
        _ candidates: [Candidate], now: ContinuousClock.Instant, using random: inout some RandomNumberGenerator
    ) -> Int? {
        guard !candidates.isEmpty else { return nil }
        let untried = candidates.indices.filter { !candidates[$0].tried }
        let pool = untried.isEmpty ? Array(candidates.indices) : untried
        let ready = pool.filter { index in candidates[index].backingOffUntil.map { $0 <= now } ?? true }
        guard !ready.isEmpty else {
            return pool.min { candidates[$0].backingOffUntil! < candidates[$1].backingOffUntil! }
        }
        guard ready.count > 1 else { return ready[0] }
        let (first, second) = self.drawTwo(from: ready.count, using: &random)
        return self.lessLoaded(ready[first], ready[second], in: candidates)
    }

    /// Two distinct indices below `count` (at least 2), uniformly.
    package static func drawTwo(from count: Int, using random: inout some RandomNumberGenerator) -> (Int, Int) {
        let first = Int.random(in: 0..<count, using: &random)
        var second = Int.random(in: 0..<(count - 1), using: &random)
        if second >= first { second += 1 }
        return (first, second)
    }

    /// Of two drawn candidates, the one with fewer calls in flight; `first` on a tie.
    package static func lessLoaded(_ first: Int, _ second: Int, in candidates: [Candidate]) -> Int {
        candidates[second].outstanding < candidates[first].outstanding ? second : first
    }
}

/// Which calls a ``BalancedClient`` sends again, to another endpoint when it can.
package enum RetryRule {
    /// What a call does on a server.
    package enum Effect: Sendable, Hashable {
        /// Inference and the read-only methods: running it twice changes nothing.
        case idempotent
        /// A management change: it may have happened even when no answer came.
        case management
    }

    /// Whether a call that failed this way may be sent again.
    ///
    /// A call that was never sent (no connection could be opened, or it had not left this
    /// client when its connection ended) always may. With retries enabled, an idempotent call
    /// may also be sent again after its connection ended while it was in flight, or after the
    /// server answered UNAVAILABLE (which InferWire servers answer only before running a
    /// call). A management call never is, once sent. Nothing else is retried.
    package static func mayRetry(
        after kind: InferWireClient.AttemptFailure.Kind, effect: Effect, retriesEnabled: Bool
    ) -> Bool {
        switch kind {
        case .connectFailed, .notSent: true
        case .unavailable, .connectionLost: effect == .idempotent && retriesEnabled
        case .final: false
        }
    }
}
