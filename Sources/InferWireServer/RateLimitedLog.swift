public import CoreMetrics
public import Logging
import Synchronization

/// Logs a kind of event at most once per interval, with how many were left out, so a flood
/// of bad connections (a scanner, a fuzzer, a misconfigured client) cannot flood the log.
public final class RateLimitedLog: Sendable {
    private struct Slot {
        var lastLogged: ContinuousClock.Instant
        var suppressed = 0
    }

    private let logger: Logger
    private let interval: Duration
    private let now: @Sendable () -> ContinuousClock.Instant
    private let slots = Mutex<[String: Slot]>([:])
    private let counter: Counting?

    /// Where every event is counted, logged or not: a swift-metrics counter named `metric`
    /// with `dimensions` and a `reason` dimension holding the event's kind.
    public struct Counting: Sendable {
        public var metric: String
        public var dimensions: [(String, String)]
        public var factory: any MetricsFactory

        public init(metric: String, dimensions: [(String, String)], factory: any MetricsFactory) {
            self.metric = metric
            self.dimensions = dimensions
            self.factory = factory
        }
    }

    /// - Parameters:
    ///   - interval: at most one line per kind of event in this span.
    ///   - now: the clock; tests pass their own.
    ///   - counting: where events are counted; nil counts none.
    public init(
        logger: Logger, interval: Duration = .seconds(10),
        now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }, counting: Counting? = nil
    ) {
        self.logger = logger
        self.interval = interval
        self.now = now
        self.counter = counting
    }

    /// Logs `message` unless an event of the same `kind` was logged within the interval; the
    /// next line that is logged says how many were left out. Returns whether it logged.
    @discardableResult
    public func log(_ kind: String, level: Logger.Level = .info, _ message: @autoclosure () -> String) -> Bool {
        if let counter = self.counter {
            Counter(
                label: counter.metric, dimensions: counter.dimensions + [("reason", kind)], factory: counter.factory
            )
            .increment()
        }
        let now = self.now()
        let suppressed: Int? = self.slots.withLock { slots in
            if let slot = slots[kind], now - slot.lastLogged < self.interval {
                slots[kind]!.suppressed += 1
                return nil
            }
            let left = slots[kind]?.suppressed ?? 0
            slots[kind] = Slot(lastLogged: now)
            return left
        }
        guard let suppressed else { return false }
        let text = message()
        self.logger.log(
            level: level,
            "\(suppressed > 0 ? "\(text) (and \(suppressed) more like it since the last such line)" : text)")
        return true
    }
}
