import Foundation
import Histogram
import InferWireCore
import Testing

@testable import InferWireBench

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
        let report = sampleReport()
        let decoded = try JSONDecoder().decode(BenchReport.self, from: JSONEncoder().encode(report))
        #expect(decoded == report)
        let rows = report.csv.split(separator: "\n")
        #expect(rows.count == 3)
        #expect(rows[1].hasPrefix("closed,8,0.0,10,1,1234.5,250.0"))
        #expect(rows[2].hasPrefix("open,0,5000.0,"))
    }

    @Test("an empty histogram summarises to zeros, which JSON can encode")
    func emptySummary() throws {
        let summary = LatencySummary(makeLatencyHistogram())
        #expect(summary.count == 0)
        #expect(
            [summary.p50, summary.p90, summary.p95, summary.p99, summary.p999, summary.max, summary.mean].allSatisfy {
                $0 == 0
            })
        _ = try JSONEncoder().encode(summary)
    }

    @Test("window tallies merge counts, errors, versions and histograms")
    func merge() {
        var a = WindowTally()
        var b = WindowTally()
        _ = a.histogram.record(1000)
        a.ok = 1
        a.errors["UNAVAILABLE"] = 2
        a.versions[1] = 1
        _ = b.histogram.record(3000)
        b.ok = 1
        b.errors["UNAVAILABLE"] = 1
        b.errors["INTERNAL"] = 1
        b.versions[2] = 1
        b.due = 5
        b.late = 1
        a.merge(b)
        #expect(a.ok == 2 && a.errorCount == 4 && a.errors["UNAVAILABLE"] == 3)
        #expect(a.versions == [1: 1, 2: 1])
        #expect(a.histogram.totalCount == 2 && a.histogram.max >= 2990)
        #expect(a.due == 5 && a.late == 1)
    }

    @Test("server times are the change between snapshots; a reloaded version starts from zero")
    func serverTimes() {
        let before: [String: ServerTimes.Counters] = [
            "a/1": .init(requests: 100, executions: 50, queueMicros: 1000, computeMicros: 5000),
            "a/2": .init(requests: 900, executions: 900, queueMicros: 0, computeMicros: 0),
        ]
        let after: [String: ServerTimes.Counters] = [
            "a/1": .init(requests: 300, executions: 100, queueMicros: 3000, computeMicros: 9000),
            // Version 2 was reloaded: its counters restarted below the earlier snapshot.
            "a/2": .init(requests: 100, executions: 100, queueMicros: 400, computeMicros: 1000),
            // Version 3 appeared during the period.
            "a/3": .init(requests: 100, executions: 50, queueMicros: 600, computeMicros: 1000),
        ]
        // A counter that went backwards means a restart, even if another grew past its old value.
        let restarted = ServerTimes(
            from: ["a/1": .init(requests: 10, executions: 10, queueMicros: 500, computeMicros: 500)],
            to: ["a/1": .init(requests: 20, executions: 5, queueMicros: 100, computeMicros: 100)])
        #expect(restarted.requests == 20 && restarted.executions == 5 && restarted.queueMicros == 5)
        let times = ServerTimes(from: before, to: after)
        #expect(times.requests == 400)
        #expect(times.executions == 200)
        #expect(times.queueMicros == 3000.0 / 400)
        #expect(times.computeMicros == 6000.0 / 400)
        #expect(times.meanBatchSize == 2)
    }
}

/// Two levels, one closed and one open, with windows, errors and a management action.
func sampleReport() -> BenchReport {
    var histogram = makeLatencyHistogram()
    _ = histogram.record(250_000)
    var tally = WindowTally()
    for v in [120_000, 250_000, 900_000] as [UInt64] { _ = tally.histogram.record(v) }
    tally.ok = 3
    tally.errors["UNAVAILABLE"] = 1
    let windows = [
        WindowSample(start: 0, seconds: 1, warmup: true, tally: tally),
        WindowSample(
            start: 1, seconds: 1, warmup: false, tally: tally,
            server: ServerTimes(requests: 3, executions: 1, queueMicros: 20, computeMicros: 80)),
        WindowSample(start: 2, seconds: 1.02, warmup: false, tally: WindowTally()),
    ]
    let event = ActionEvent(
        action: "promote fraud", at: 1.5, tookMicros: 850, succeeded: true,
        outcome: "stable 2 <was 1> & \"done\" \u{1B}[0m",
        before: Span(seconds: 1, tally: tally), after: Span(seconds: 1, tally: WindowTally()))
    let closed = LevelResult(
        mode: "closed", concurrency: 8, askedRate: 0, requests: 10, errors: ["UNAVAILABLE": 1], throughput: 1234.5,
        latency: LatencySummary(histogram), windows: windows, stable: true, stopReason: "stable",
        versions: ["1": 6, "2": 3],
        server: ServerTimes(requests: 9, executions: 3, queueMicros: 12.25, computeMicros: 40.5), generatorCores: 0.31,
        generatorLoops: 1, events: [event])
    let open = LevelResult(
        mode: "open", concurrency: 0, askedRate: 5000, requests: 4990, errors: [:], throughput: 4987.65,
        latency: LatencySummary(tally.histogram),
        windows: windows.map {
            var w = $0
            w.start += 4
            return w
        }, stable: false,
        stopReason: "duration", versions: ["2": 4990], due: 5000, late: 120, skipped: 3, server: nil,
        generatorCores: 0.97,
        generatorLoops: 1)
    return BenchReport(
        model: "fraud", target: "label stable", servers: ["127.0.0.1:8500"], connections: 2, compression: false,
        startedAt: "2026-11-26T12:00:00Z", levels: [closed, open])
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

@Suite("Management actions under load")
struct ManagementActionTests {
    @Test("every action parses with its arguments")
    func parses() throws {
        #expect(try ManagementAction(parsing: "promote fraud") == .promote(model: "fraud"))
        #expect(try ManagementAction(parsing: "rollback fraud") == .rollback(model: "fraud"))
        #expect(try ManagementAction(parsing: "load mlp 3") == .load(model: "mlp", version: 3))
        #expect(try ManagementAction(parsing: "unload  mlp 1") == .unload(model: "mlp", version: 1))
        #expect(
            try ManagementAction(parsing: "traffic fraud 2 25") == .traffic(model: "fraud", version: 2, percent: 25))
        #expect(try ManagementAction(parsing: "traffic fraud 0 0") == .traffic(model: "fraud", version: 0, percent: 0))
        #expect(
            try ManagementAction(parsing: "shadow fraud 2 100") == .shadow(model: "fraud", version: 2, percent: 100))
    }

    @Test("malformed actions are refused with the reason")
    func refuses() {
        func reason(_ text: String) -> String? {
            do {
                _ = try ManagementAction(parsing: text)
                return nil
            } catch {
                #expect(error.code == .invalidArgument)
                return error.message
            }
        }
        #expect(reason("promote")?.contains("ACTION MODEL") == true)
        #expect(reason("deploy fraud")?.contains("unknown action 'deploy'") == true)
        #expect(reason("load fraud")?.contains("takes 2 argument") == true)
        #expect(reason("load fraud two")?.contains("positive integer") == true)
        #expect(reason("traffic fraud 2 101")?.contains("0…100") == true)
        #expect(reason("shadow fraud 2 -5")?.contains("0…100") == true)
        #expect(reason("promote fraud now")?.contains("takes 1 argument") == true)
    }
}
