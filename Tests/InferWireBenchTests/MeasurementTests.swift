import Foundation
import Histogram
import InferWireBench
import Testing

@Suite("Load generator measurements")
struct MeasurementTests {
    @Test("percentiles of a known distribution come out within the histogram's precision")
    func percentiles() {
        var histogram = makeLatencyHistogram()
        // 1 µs … 1000 µs, one each: p50 ≈ 500 µs, p99 ≈ 990 µs, max 1000 µs.
        for micros in 1...1000 { _ = histogram.record(UInt64(micros) * 1000) }
        let summary = LatencySummary(histogram)
        #expect(summary.count == 1000)
        #expect(abs(summary.p50 - 500) <= 1)
        #expect(abs(summary.p90 - 900) <= 1)
        #expect(abs(summary.p99 - 990) <= 1)
        #expect(abs(summary.max - 1000) <= 1)
        #expect(abs(summary.mean - 500.5) <= 1)
    }

    @Test("a tail of slow requests moves p99 and max, not p50")
    func tail() {
        var histogram = makeLatencyHistogram()
        for _ in 0..<980 { _ = histogram.record(100_000) }  // 100 µs
        for _ in 0..<20 { _ = histogram.record(50_000_000) }  // 50 ms
        let summary = LatencySummary(histogram)
        #expect(abs(summary.p50 - 100) <= 0.5)
        #expect(summary.p99 >= 49_000)
        #expect(summary.max >= 49_900)
    }

    @Test("windows are stable only when the last three agree within the tolerance")
    func stability() {
        let rule = StabilityRule(windows: 3, tolerance: 0.10)
        #expect(rule.isStable([1000, 1000]) == false)  // too few windows
        #expect(rule.isStable([500, 1000, 1020, 990]) == true)  // an early ramp does not count
        #expect(rule.isStable([1000, 1300, 1000]) == false)
        #expect(rule.isStable([0, 0, 0]) == false)
        #expect(StabilityRule(windows: 3, tolerance: 0.5).isStable([1000, 1300, 1000]) == true)
    }

    @Test("the JSON report round-trips and the CSV has one row per level")
    func reports() throws {
        var histogram = makeLatencyHistogram()
        _ = histogram.record(250_000)
        let level = LevelResult(
            concurrency: 8, requests: 10, errors: ["UNAVAILABLE": 1], throughput: 1234.5, latency: LatencySummary(histogram),
            windowThroughputs: [1200, 1250, 1253], stable: true, versions: ["1": 9])
        let report = BenchReport(model: "mlp", servers: ["127.0.0.1:8500"], levels: [level, level])
        let decoded = try JSONDecoder().decode(BenchReport.self, from: JSONEncoder().encode(report))
        #expect(decoded == report)
        let rows = report.csv.split(separator: "\n")
        #expect(rows.count == 3)
        #expect(rows[1].hasPrefix("8,10,1,1234.5,250.0"))
    }
}

@Suite("Open-loop schedule")
struct ScheduleTests {
    @Test("constant arrivals are evenly spaced at the asked rate")
    func constant() {
        var schedule = ArrivalSchedule(rate: 2000, poisson: false)
        for _ in 0..<100 { #expect(schedule.nextGap() == 0.0005) }
    }

    @Test("Poisson arrivals average the asked rate, vary, and repeat for one seed")
    func poisson() {
        var a = ArrivalSchedule(rate: 1000, poisson: true, seed: 42)
        var b = ArrivalSchedule(rate: 1000, poisson: true, seed: 42)
        let gaps = (0..<20_000).map { _ in a.nextGap() }
        #expect(gaps == (0..<20_000).map { _ in b.nextGap() })
        let mean = gaps.reduce(0, +) / Double(gaps.count)
        // Exponential with mean 1 ms: sd of the mean over 20,000 draws ≈ 7 µs.
        #expect(abs(mean - 0.001) < 0.00005)
        let variance = gaps.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(gaps.count)
        // An exponential's standard deviation equals its mean.
        #expect(abs(variance.squareRoot() - 0.001) < 0.0001)
        #expect(gaps.allSatisfy { $0 > 0 })
    }
}
