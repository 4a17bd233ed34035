import Foundation
public import InferWireClient
public import InferWireCore
public import InferWireProto
import Histogram
import Synchronization

/// When each request of an open-loop run is due: evenly spaced, or with exponential gaps
/// (Poisson arrivals) from a seeded generator so runs are repeatable.
public struct ArrivalSchedule: Sendable {
    public var rate: Double
    public var poisson: Bool
    private var state: UInt64

    public init(rate: Double, poisson: Bool, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) {
        self.rate = rate
        self.poisson = poisson
        self.state = seed == 0 ? 1 : seed
    }

    /// Seconds from the previous arrival to the next.
    public mutating func nextGap() -> Double {
        guard self.poisson else { return 1 / self.rate }
        // xorshift64*: a uniform draw in (0, 1], then the exponential's inverse CDF.
        self.state ^= self.state >> 12
        self.state ^= self.state << 25
        self.state ^= self.state >> 27
        let bits = (self.state &* 0x2545_F491_4F6C_DD1D) >> 11
        let uniform = (Double(bits) + 1) / Double(1 << 53)
        return -log(uniform) / self.rate
    }
}

/// Runs open-loop load: requests are sent when they are due, whether or not earlier ones
/// were answered. Latency counts from the moment a request was due, not from when it was
/// sent, so a server (or generator) that stalls cannot hide the stall.
public struct OpenLoop: Sendable {
    public var request: Inferwire_V1_InferRequest
    public var warmup: Duration
    public var duration: Duration
    /// Requests in flight beyond which the generator stops sending and counts the rest as
    /// late rather than piling up memory.
    public var maxInFlight: Int

    public init(request: Inferwire_V1_InferRequest, warmup: Duration = .seconds(1), duration: Duration = .seconds(5), maxInFlight: Int = 4096) {
        self.request = request
        self.warmup = warmup
        self.duration = duration
        self.maxInFlight = maxInFlight
    }

    /// What an open-loop level achieved.
    public struct Outcome: Sendable {
        public var result: LevelResult
        /// Requests sent more than 1 ms after they were due: the generator fell behind.
        public var lateSends: UInt64
        /// Requests not sent at all because `maxInFlight` were outstanding.
        public var skipped: UInt64
        /// Requests due in the measured period.
        public var due: UInt64
        public var askedRate: Double
    }

    final class Tally: Sendable {
        let state = Mutex<(histogram: Histogram<UInt64>, ok: UInt64, errors: [String: UInt64], versions: [String: UInt64])>(
            (makeLatencyHistogram(), 0, [:], [:]))
        let inFlight = Atomic<Int>(0)
    }

    public func run(rate: Double, poisson: Bool, clients: [InferWireClient]) async throws -> Outcome {
        let tally = Tally()
        let request = self.request
        var schedule = ArrivalSchedule(rate: rate, poisson: poisson)
        let start = ContinuousClock.now
        let countFrom = start + self.warmup
        let end = countFrom + self.duration
        var due = start
        var late: UInt64 = 0, skipped: UInt64 = 0, dueCount: UInt64 = 0, index = 0
        await withTaskGroup(of: Void.self) { group in
            while due < end {
                let now = ContinuousClock.now
                if due > now { try? await Task.sleep(until: due, clock: .continuous) }
                let counted = due >= countFrom
                if counted { dueCount += 1 }
                if counted, ContinuousClock.now - due > .milliseconds(1) { late += 1 }
                if tally.inFlight.load(ordering: .relaxed) >= self.maxInFlight {
                    if counted { skipped += 1 }
                } else {
                    tally.inFlight.add(1, ordering: .relaxed)
                    let client = clients[index % clients.count]
                    let intended = due
                    group.addTask {
                        defer { tally.inFlight.subtract(1, ordering: .relaxed) }
                        do {
                            let response = try await client.infer(request)
                            guard counted else { return }
                            let elapsed = ContinuousClock.now - intended
                            let nanos = UInt64(max(0, elapsed.inNanoseconds))
                            tally.state.withLock { s in
                                _ = s.histogram.record(nanos)
                                s.ok += 1
                                s.versions[String(response.modelVersion), default: 0] += 1
                            }
                        } catch {
                            guard counted else { return }
                            let code = (error as? InferWireError)?.code.description ?? "UNKNOWN"
                            tally.state.withLock { $0.errors[code, default: 0] += 1 }
                        }
                    }
                }
                index += 1
                due = due + .nanoseconds(Int64(schedule.nextGap() * 1e9))
            }
            await group.waitForAll()
        }
        let seconds = self.duration.inSeconds
        let result = tally.state.withLock { s in
            LevelResult(
                concurrency: 0, requests: s.ok + s.errors.values.reduce(0, +), errors: s.errors, throughput: Double(s.ok) / seconds,
                latency: LatencySummary(s.histogram), windowThroughputs: [Double(s.ok) / seconds], stable: (late + skipped) * 100 <= dueCount,
                versions: s.versions)
        }
        return Outcome(result: result, lateSends: late, skipped: skipped, due: dueCount, askedRate: rate)
    }
}
