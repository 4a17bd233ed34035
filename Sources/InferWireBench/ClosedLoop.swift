import Foundation
public import Histogram
public import InferWireClient
public import InferWireCore
public import InferWireProto
import Synchronization

/// Runs closed-loop load: `concurrency` callers, each sending its next request as soon as
/// the previous one is answered, spread over the given connections.
public struct ClosedLoop: Sendable {
    public var request: Inferwire_V1_InferRequest
    public var warmup: Duration
    public var window: Duration
    public var maxWindows: Int
    public var rule: StabilityRule

    public init(request: Inferwire_V1_InferRequest, warmup: Duration = .seconds(1), window: Duration = .seconds(1),
                maxWindows: Int = 10, rule: StabilityRule = .init()) {
        self.request = request
        self.warmup = warmup
        self.window = window
        self.maxWindows = maxWindows
        self.rule = rule
    }

    final class Tally: Sendable {
        struct State {
            var histogram = makeLatencyHistogram()
            var ok: UInt64 = 0
            var errors: [String: UInt64] = [:]
            var versions: [String: UInt64] = [:]
        }
        let counting = Atomic<Bool>(false)
        let stop = Atomic<Bool>(false)
        let state = Mutex(State())
    }

    /// Measures one level; stops when the windows settle or after `maxWindows`.
    public func run(concurrency: Int, clients: [InferWireClient]) async throws -> LevelResult {
        let tally = Tally()
        let request = self.request
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for caller in 0..<concurrency {
                let client = clients[caller % clients.count]
                group.addTask {
                    while !tally.stop.load(ordering: .relaxed) {
                        let start = ContinuousClock.now
                        do {
                            let response = try await client.infer(request)
                            let elapsed = ContinuousClock.now - start
                            if tally.counting.load(ordering: .relaxed) {
                                let nanos = UInt64(max(0, elapsed.inNanoseconds))
                                tally.state.withLock { s in
                                    _ = s.histogram.record(nanos)
                                    s.ok += 1
                                    s.versions[String(response.modelVersion), default: 0] += 1
                                }
                            }
                        } catch {
                            let code = (error as? InferWireError)?.code.description ?? "UNKNOWN"
                            if tally.counting.load(ordering: .relaxed) { tally.state.withLock { $0.errors[code, default: 0] += 1 } }
                        }
                    }
                }
            }
            defer { tally.stop.store(true, ordering: .relaxed) }
            try await Task.sleep(for: self.warmup)
            tally.counting.store(true, ordering: .relaxed)
            var throughputs: [Double] = []
            var previous: UInt64 = 0
            var stable = false
            let seconds = self.window.inSeconds
            while throughputs.count < self.maxWindows {
                try await Task.sleep(for: self.window)
                let ok = tally.state.withLock { $0.ok }
                throughputs.append(Double(ok - previous) / seconds)
                previous = ok
                if self.rule.isStable(throughputs) { stable = true; break }
            }
            tally.counting.store(false, ordering: .relaxed)
            tally.stop.store(true, ordering: .relaxed)
            try await group.waitForAll()
            return tally.state.withLock { s in
                LevelResult(
                    concurrency: concurrency, requests: s.ok + s.errors.values.reduce(0, +), errors: s.errors,
                    throughput: throughputs.isEmpty ? 0 : Double(s.ok) / (seconds * Double(throughputs.count)),
                    latency: LatencySummary(s.histogram), windowThroughputs: throughputs, stable: stable, versions: s.versions)
            }
        }
    }
}
