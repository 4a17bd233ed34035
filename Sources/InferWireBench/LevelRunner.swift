import Foundation
import Histogram
import InferWireCore
import NIOCore

/// How a run measures each level.
public struct MeasurementSettings: Sendable {
    /// Load before measuring starts; not counted.
    public var warmup: Duration
    /// Length of one measurement window.
    public var window: Duration
    /// Closed loop: the most windows per level.
    public var maxWindows: Int
    /// Closed loop: when the windows have settled.
    public var rule: StabilityRule
    /// Closed loop: measure each level until this many requests are answered (or `maxWindows`
    /// windows pass), instead of until the windows settle. Windows are still recorded.
    public var requestCount: Int?
    /// Open loop: how long each rate is measured.
    public var openDuration: Duration
    /// Open loop: requests in flight (over all connections) beyond which sends are skipped
    /// and counted rather than piling up memory.
    public var maxInFlight: Int
    /// Open loop: seed for Poisson arrivals, so runs repeat.
    public var seed: UInt64

    public init(
        warmup: Duration = .seconds(1), window: Duration = .seconds(1), maxWindows: Int = 10,
        rule: StabilityRule = .init(),
        openDuration: Duration = .seconds(5), maxInFlight: Int = 4096, seed: UInt64 = 0x9E37_79B9_7F4A_7C15,
        requestCount: Int? = nil
    ) {
        self.requestCount = requestCount
        self.warmup = warmup
        self.window = window
        self.maxWindows = maxWindows
        self.rule = rule
        self.openDuration = openDuration
        self.maxInFlight = maxInFlight
        self.seed = seed
    }

    /// 1 s warm-up, 1 s windows, at most 10, settled when 3 agree within 10%; open-loop rates for 5 s.
    public static var defaults: MeasurementSettings { MeasurementSettings() }
}

/// The load of one level.
public enum LoadLevel: Sendable, Equatable {
    case closed(concurrency: Int)
    case open(rate: Double, poisson: Bool)

    /// "64 in flight" or "5000 req/s".
    public var label: String {
        switch self {
        case .closed(let concurrency): "\(concurrency) in flight"
        case .open(let rate, _): String(format: "%.0f req/s", rate)
        }
    }
}

/// A management action to run once while a level is measured.
public struct ScheduledAction: Sendable {
    /// What is run, e.g. "promote fraud".
    public var name: String
    /// Time after measurement starts (warm-up excluded).
    public var at: Duration
    /// How long to keep measuring after the action, so its effect is seen.
    public var after: Duration
    /// Runs the action and describes the server's answer.
    public var run: @Sendable () async throws -> String

    public init(
        name: String, at: Duration, after: Duration = .seconds(5), run: @escaping @Sendable () async throws -> String
    ) {
        self.name = name
        self.at = at
        self.after = after
        self.run = run
    }
}

/// Measures levels with a ``LoadDriver`` (a ``LoadGenerator`` or a ``BalancedLoadGenerator``):
/// warm-up, windows until the level settles, the server's own times for the same period, and
/// any management action in between.
public struct LevelRunner: Sendable {
    public var generator: any LoadDriver
    public var settings: MeasurementSettings
    /// Cumulative statistics of the model by "server/version", for ``ServerTimes``; nil when
    /// the server cannot be asked.
    public var serverCounters: (@Sendable () async -> [String: ServerTimes.Counters]?)?
    /// Called after every window, warm-up included, with the level and the window.
    public var onWindow: (@Sendable (LoadLevel, WindowSample) -> Void)?
    /// The run's time origin: window start times are seconds from here.
    public let origin: ContinuousClock.Instant

    public init(
        generator: any LoadDriver, settings: MeasurementSettings, origin: ContinuousClock.Instant = .now,
        serverCounters: (@Sendable () async -> [String: ServerTimes.Counters]?)? = nil,
        onWindow: (@Sendable (LoadLevel, WindowSample) -> Void)? = nil
    ) {
        self.generator = generator
        self.settings = settings
        self.origin = origin
        self.serverCounters = serverCounters
        self.onWindow = onWindow
    }

    private func seconds(since instant: ContinuousClock.Instant) -> Double { (instant - self.origin).inSeconds }

    /// Runs one level to its end and reports it.
    public func run(_ level: LoadLevel, action: ScheduledAction? = nil) async throws -> LevelResult {
        switch level {
        case .closed(let concurrency):
            try await self.generator.startClosed(concurrency: concurrency)
        case .open(let rate, let poisson):
            try await self.generator.startOpen(
                rate: rate, poisson: poisson, seed: self.settings.seed, maxInFlight: self.settings.maxInFlight)
        }

        var windows: [WindowSample] = []
        let warmupStart = ContinuousClock.now
        if self.settings.warmup > .zero {
            try await Task.sleep(until: warmupStart + self.settings.warmup, clock: .continuous)
        }
        // Measured by count: the budget starts in the same step as the warm-up tally ends.
        var counting = false
        let warm: WindowTally
        if case .closed(let concurrency) = level, let count = self.settings.requestCount, action == nil {
            warm = try await self.generator.limit(answers: count, concurrency: concurrency)
            counting = true
        } else {
            warm = await self.generator.collect()
        }
        let measureStart = ContinuousClock.now
        let measureStartUptime = NIODeadline.now().uptimeNanoseconds
        let cpuBefore = processCPUSeconds()
        let warmSample = WindowSample(
            start: self.seconds(since: warmupStart), seconds: (measureStart - warmupStart).inSeconds, warmup: true,
            tally: warm)
        if self.settings.warmup > .zero {
            windows.append(warmSample)
            self.onWindow?(level, warmSample)
        }

        let countersBefore = await self.serverCounters?()
        var lastCounters = countersBefore

        // The action runs in its own task at its time; windows keep being collected meanwhile.
        let actionTask:
            Task<(start: ContinuousClock.Instant, took: Duration, succeeded: Bool, outcome: String), Never>? =
                action.map { action in
                    Task {
                        try? await Task.sleep(until: measureStart + action.at, clock: .continuous)
                        let start = ContinuousClock.now
                        do {
                            let outcome = try await action.run()
                            return (start, ContinuousClock.now - start, true, outcome)
                        } catch {
                            return (start, ContinuousClock.now - start, false, "\(error)")
                        }
                    }
                }

        // Around an action: the windows just before its scheduled time, and from the window it
        // falls in on, each up to `after` long. Two running tallies, not one per window.
        var before = WindowTally()
        var after = WindowTally()
        var beforeSeconds = 0.0
        var afterSeconds = 0.0
        var total = WindowTally()
        var throughputs: [Double] = []
        var stable = false
        var stopReason = "window limit"
        var windowStart = measureStart
        // Measured by count: when the last counted answer arrived (uptime ns).
        var spentAt: UInt64?
        var k = 1
        while true {
            let windowEnd = measureStart + self.settings.window * k
            if counting {
                // Look every 10 ms, so the level ends soon after the last counted answer.
                while ContinuousClock.now < windowEnd {
                    spentAt = await self.generator.budgetSpentAt()
                    if spentAt != nil { break }
                    try await Task.sleep(until: min(windowEnd, .now + .milliseconds(10)), clock: .continuous)
                }
            } else {
                try await Task.sleep(until: windowEnd, clock: .continuous)
            }
            let tally = await self.generator.collect()
            let now = ContinuousClock.now
            // The server's view of the same window, from one more statistics snapshot.
            var windowServer: ServerTimes?
            if let previous = lastCounters, let current = await self.serverCounters?() {
                windowServer = ServerTimes(from: previous, to: current)
                lastCounters = current
            }
            let sample = WindowSample(
                start: self.seconds(since: windowStart), seconds: (now - windowStart).inSeconds, warmup: false,
                tally: tally, server: windowServer)
            windows.append(sample)
            self.onWindow?(level, sample)
            if let action {
                // By the window's scheduled end: collecting it takes a moment past that.
                let planned = measureStart + action.at
                if windowEnd <= planned, planned - windowEnd < action.after {
                    before.merge(tally)
                    beforeSeconds += sample.seconds
                } else if windowEnd > planned, windowEnd - self.settings.window - planned < action.after {
                    after.merge(tally)
                    afterSeconds += sample.seconds
                }
            }
            total.merge(tally)
            throughputs.append(sample.throughput)
            windowStart = now
            let measured = now - measureStart
            let done: Bool
            if let action {
                done = measured >= action.at + action.after
                if done { stopReason = "action" }
            } else if counting {
                // Counted levels stop at the count, or at the window limit short of it.
                stable = spentAt != nil
                done = stable || k >= self.settings.maxWindows
                if stable { stopReason = "request count" }
            } else {
                switch level {
                case .closed:
                    stable = self.settings.rule.isStable(throughputs)
                    if stable { stopReason = "stable" }
                    done = stable || k >= self.settings.maxWindows
                case .open:
                    // The last window may end a little early rather than overrun by a whole window.
                    done = measured + self.settings.window / 2 >= self.settings.openDuration
                    if done { stopReason = "duration" }
                }
            }
            if done { break }
            k += 1
        }
        let measureEnd = windowStart
        let cpu = processCPUSeconds() - cpuBefore
        let unanswered = await self.generator.stop()
        _ = await self.generator.collect()  // answers to requests sent before the stop: not in the period
        if unanswered > 0 { total.errors["NO_ANSWER", default: 0] += UInt64(unanswered) }
        let countersAfter = await self.serverCounters?()

        var events: [ActionEvent] = []
        if let action, let actionTask {
            let done = await actionTask.value
            events.append(
                ActionEvent(
                    action: action.name, at: self.seconds(since: done.start), tookMicros: done.took.inSeconds * 1e6,
                    succeeded: done.succeeded,
                    outcome: done.outcome, before: Span(seconds: beforeSeconds, tally: before),
                    after: Span(seconds: afterSeconds, tally: after)))
        }

        var measuredSeconds = (measureEnd - measureStart).inSeconds
        if let spentAt, spentAt > measureStartUptime {
            // The period ends with the last counted answer, not with the poll that noticed it.
            measuredSeconds = Double(spentAt - measureStartUptime) / 1e9
        }
        if case .open = level {
            stable = (total.late + total.skipped) * 100 <= total.due
        }
        let server = countersBefore.flatMap { before in countersAfter.map { ServerTimes(from: before, to: $0) } }
        let (concurrency, rate, mode): (Int, Double, String) =
            switch level {
            case .closed(let c): (c, 0, "closed")
            case .open(let r, _): (0, r, "open")
            }
        return LevelResult(
            mode: mode, concurrency: concurrency, askedRate: rate, requests: total.ok + total.errorCount,
            errors: total.errors,
            throughput: measuredSeconds > 0 ? Double(total.ok) / measuredSeconds : 0,
            latency: LatencySummary(total.histogram),
            windows: windows, stable: stable, stopReason: stopReason,
            versions: Dictionary(uniqueKeysWithValues: total.versions.map { (String($0.key), $0.value) }),
            due: total.due, late: total.late, skipped: total.skipped, server: server,
            generatorCores: measuredSeconds > 0 ? cpu / measuredSeconds : 0, generatorLoops: self.generator.loopCount,
            events: events)
    }
}

/// User plus system CPU time of this process, in seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
