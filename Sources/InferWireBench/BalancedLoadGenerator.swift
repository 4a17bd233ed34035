import Foundation
import Histogram
public import InferWireClient
import InferWireCore
package import InferWireProto
import NIOCore
import Synchronization

/// What ``LevelRunner`` drives: a source of load that starts a shape, is collected window by
/// window, and stops. ``LoadGenerator`` (connections to named servers, driven on their event
/// loops) and ``BalancedLoadGenerator`` (a ``BalancedClient`` over a fleet) are the two.
public protocol LoadDriver: Sendable {
    /// Keeps `concurrency` requests in flight in total.
    func startClosed(concurrency: Int) async throws
    /// Sends `rate` requests per second in total, evenly spaced or Poisson, whatever is in flight.
    func startOpen(rate: Double, poisson: Bool, seed: UInt64, maxInFlight: Int) async throws
    /// Closed loop: from now on, count `answers` more answers and stop sending once they are
    /// covered. Returns what was measured before, like ``collect()``.
    func limit(answers: Int, concurrency: Int) async throws -> WindowTally
    /// When the answer budget was spent (uptime ns), or nil while answers are still due.
    func budgetSpentAt() async -> UInt64?
    /// Stops sending and waits (at most `timeout`) for the requests in flight; returns how
    /// many were still unanswered and are now given up on.
    func stop(timeout: Duration) async -> Int
    /// Everything measured since the last collection.
    func collect() async -> WindowTally
    /// The threads that drive the load, for judging whether the generator is the bottleneck.
    var loopCount: Int { get }
}

extension LoadDriver {
    /// Stops, waiting at most 10 s for the requests in flight.
    public func stop() async -> Int { await self.stop(timeout: .seconds(10)) }
}

extension LoadGenerator: LoadDriver {}

/// Load through a ``BalancedClient``: every request is an ``BalancedClient`` inference call,
/// so it is spread by power of two choices, retried as the client is configured, and counted
/// once, by its final outcome. Latency runs from the intended send time to the final answer,
/// retries included.
///
/// Each request is an async call rather than a frame written from an event-loop handler, so
/// the generator spends more CPU per request than ``LoadGenerator`` does: it is for fleets,
/// where spreading and failing over are what is measured.
public final class BalancedLoadGenerator: LoadDriver {
    private let client: BalancedClient
    private let request: Inferwire_V1_InferRequest
    private let state = Mutex(State())

    private struct State {
        var tally = WindowTally()
        /// Requests sent in the current epoch and not answered yet.
        var pending = 0
        /// Bumped when a shape starts or requests are given up on: answers from an older
        /// epoch are not counted, and its workers stop.
        var epoch = 0
        /// Closed loop: requests to keep in flight.
        var target = 0
        /// Closed loop measured by count: answers still to be counted. nil: no budget.
        var answersLeft: Int?
        var budgetSpentAt: UInt64?
        /// Open loop: the most requests in flight before sends are skipped.
        var openCap = 0
        var drained: CheckedContinuation<Void, Never>?
        /// Set when a stop's wait for the drain timed out.
        var stopExpired = false
    }

    /// Sends `inputs` to `model` (an exact `version`, a `label`, or neither) through `client`.
    public convenience init(
        client: BalancedClient, model: String, version: Int64? = nil, label: String? = nil, inputs: [Tensor]
    ) {
        var request = Inferwire_V1_InferRequest()
        request.modelName = model
        if let version { request.version.version = version } else if let label { request.version.label = label }
        request.inputs = inputs.map(\.wire)
        self.init(client: client, request: request)
    }

    /// Sends a request message built by the caller.
    package init(client: BalancedClient, request: Inferwire_V1_InferRequest) {
        self.client = client
        self.request = request
    }

    /// The cooperative thread pool runs the calls: one thread per core.
    public var loopCount: Int { ProcessInfo.processInfo.activeProcessorCount }

    public func startClosed(concurrency: Int) async throws {
        let (epoch, workers) = self.state.withLock { state -> (Int, Int) in
            state.epoch += 1
            state.pending = 0
            state.target = concurrency
            state.openCap = 0
            let workers = max(0, concurrency - state.pending)
            state.pending += workers
            return (state.epoch, workers)
        }
        for _ in 0..<workers { self.send(epoch: epoch, intended: NIODeadline.now().uptimeNanoseconds) }
    }

    public func startOpen(rate: Double, poisson: Bool, seed: UInt64, maxInFlight: Int) async throws {
        let epoch = self.state.withLock { state -> Int in
            state.epoch += 1
            state.pending = 0
            state.target = 0
            state.openCap = max(1, maxInFlight)
            return state.epoch
        }
        var arrivals = ArrivalSchedule(rate: rate, poisson: poisson, seed: seed)
        let start = NIODeadline.now().uptimeNanoseconds + 1_000_000
        Task {
            var due = start
            while true {
                let now = NIODeadline.now().uptimeNanoseconds
                if due > now { try? await Task.sleep(nanoseconds: due - now) }
                let now2 = NIODeadline.now().uptimeNanoseconds
                let sends = self.state.withLock { state -> [UInt64]? in
                    guard state.epoch == epoch else { return nil }
                    var sends: [UInt64] = []
                    while due <= now2 {
                        state.tally.due += 1
                        if state.pending >= state.openCap {
                            state.tally.skipped += 1
                        } else {
                            if now2 - due > 1_000_000 { state.tally.late += 1 }
                            state.pending += 1
                            sends.append(due)
                        }
                        due += UInt64(max(1, arrivals.nextGap() * 1e9))
                    }
                    return sends
                }
                guard let sends else { return }
                for intended in sends { self.send(epoch: epoch, intended: intended) }
            }
        }
    }

    /// One request, counted as sent already; a closed-loop answer sends the next.
    private func send(epoch: Int, intended: UInt64) {
        Task {
            let outcome: Result<Int64, any Error>
            do {
                outcome = .success(try await self.client.infer(self.request).modelVersion)
            } catch {
                outcome = .failure(error)
            }
            let now = NIODeadline.now().uptimeNanoseconds
            let (again, drained) = self.state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
                guard state.epoch == epoch else { return (false, nil) }
                state.pending -= 1
                switch outcome {
                case .success(let version):
                    state.tally.ok += 1
                    // Beyond the ceiling counts as the ceiling, so a stall still shows in max and p99.9.
                    _ = state.tally.histogram.record(min(now &- intended, latencyCeilingNanos))
                    state.tally.versions[version, default: 0] += 1
                case .failure(let error):
                    let code = (error as? InferWireError)?.code ?? .unknown
                    state.tally.errors[code.description, default: 0] += 1
                }
                if let left = state.answersLeft {
                    state.answersLeft = left - 1
                    if left == 1 { state.budgetSpentAt = now }
                }
                var again = state.pending < state.target
                if let left = state.answersLeft, state.pending >= left { again = false }
                if again { state.pending += 1 }
                var drained: CheckedContinuation<Void, Never>?
                if state.pending == 0 {
                    drained = state.drained
                    state.drained = nil
                }
                return (again, drained)
            }
            drained?.resume()
            if again { self.send(epoch: epoch, intended: now) }
        }
    }

    public func limit(answers: Int, concurrency: Int) async throws -> WindowTally {
        self.state.withLock { state in
            state.answersLeft = answers
            state.budgetSpentAt = answers <= 0 ? NIODeadline.now().uptimeNanoseconds : nil
            defer { state.tally = WindowTally() }
            return state.tally
        }
    }

    public func budgetSpentAt() async -> UInt64? {
        self.state.withLock { state in
            guard let left = state.answersLeft, left <= 0 else { return nil }
            return state.budgetSpentAt
        }
    }

    public func stop(timeout: Duration) async -> Int {
        let waiting = self.state.withLock { state -> Bool in
            state.target = 0
            state.openCap = 0
            state.answersLeft = nil
            state.stopExpired = false
            return state.pending > 0
        }
        if waiting {
            // The drain, or the timeout: whichever comes first resumes the wait.
            let timer = Task {
                try? await Task.sleep(for: timeout)
                let drained = self.state.withLock { state in
                    state.stopExpired = true
                    defer { state.drained = nil }
                    return state.drained
                }
                drained?.resume()
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = self.state.withLock { state -> Bool in
                    guard state.pending > 0, !state.stopExpired else { return true }
                    state.drained = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
            timer.cancel()
        }
        return self.state.withLock { state in
            // Whatever is still in flight is given up on: its answers belong to no level.
            let unanswered = state.pending
            state.pending = 0
            state.epoch += 1
            return unanswered
        }
    }

    public func collect() async -> WindowTally {
        self.state.withLock { state in
            defer { state.tally = WindowTally() }
            return state.tally
        }
    }
}
