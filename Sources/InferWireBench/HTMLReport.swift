import Foundation

/// Renders a run as one self-contained HTML file: a summary table, throughput and latency
/// percentiles per level, and latency over time, drawn as inline SVG. No scripts, fonts or
/// stylesheets are loaded from anywhere. The markup is well-formed XML, and the run's JSON
/// is embedded (as inert `application/json`) so the file carries its own data.
public enum HTMLReport {
    public static func render(_ report: BenchReport) -> String {
        var html = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8"/>
            <meta name="viewport" content="width=device-width, initial-scale=1"/>
            <title>InferWire load report: \(escape(report.model))</title>
            <style>
            body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px; color: #1b1f24; padding: 0 1em; }
            h1 { font-size: 1.5em; margin-bottom: 0.2em; }
            h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
            .meta { color: #57606a; margin-top: 0; }
            table { border-collapse: collapse; font-size: 0.9em; margin-top: 0.6em; }
            th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e5e8eb; text-align: right; white-space: nowrap; }
            th { background: #f6f8fa; }
            td.text, th.text { text-align: left; }
            .warn { color: #9a3412; }
            .bad { color: #b91c1c; font-weight: 600; }
            .good { color: #15803d; }
            svg { background: #fff; border: 1px solid #e5e8eb; margin-top: 0.6em; }
            svg text { font-size: 11px; fill: #57606a; }
            .legend span { display: inline-block; margin-right: 1.2em; font-size: 0.85em; }
            .legend i { display: inline-block; width: 1em; height: 0.25em; vertical-align: middle; margin-right: 0.3em; }
            </style>
            </head>
            <body>

            """
        let servers = report.servers.joined(separator: ", ")
        let target = report.target.isEmpty ? "" : " (\(report.target))"
        html += "<h1>InferWire load report: \(escape(report.model))\(escape(target))</h1>\n"
        html +=
            "<p class=\"meta\">\(escape(servers)) · \(report.connections) connection(s)\(report.compression ? " · compressed" : "")"
        html += report.startedAt.isEmpty ? "" : " · started \(escape(report.startedAt))"
        html += "</p>\n"
        html += self.headline(report)
        html += self.summaryTable(report)
        if report.levels.count > 1 {
            html += "<h2>Throughput per level</h2>\n" + self.throughputChart(report)
            html += "<h2>Latency percentiles per level</h2>\n" + self.percentileChart(report)
        }
        html += "<h2>Latency over time</h2>\n" + self.timeline(report)
        let events = report.levels.flatMap(\.events)
        if !events.isEmpty { html += self.eventTable(events) }
        html += self.notes(report)
        html += "<script type=\"application/json\" id=\"inferwire-report\">\(embeddedJSON(report))</script>\n"
        html += "</body>\n</html>\n"
        return html
    }

    // MARK: Text

    private static func headline(_ report: BenchReport) -> String {
        guard let best = report.levels.max(by: { $0.throughput < $1.throughput }) else { return "" }
        let errors = report.levels.reduce(0) { $0 + $1.errorCount }
        var line =
            "<p>Peak <b>\(format(best.throughput, 0)) req/s</b> at \(escape(best.label)), p99 \(format(best.latency.p99, 1)) µs. "
        line += errors == 0 ? "<span class=\"good\">No errors.</span>" : "<span class=\"bad\">\(errors) errors.</span>"
        return line + "</p>\n"
    }

    private static func summaryTable(_ report: BenchReport) -> String {
        var t =
            "<table id=\"levels\">\n<tr><th class=\"text\">level</th><th>req/s</th><th>p50 µs</th><th>p90 µs</th><th>p95 µs</th><th>p99 µs</th>"
        t +=
            "<th>p99.9 µs</th><th>max µs</th><th>errors</th><th>server queue µs</th><th>server compute µs</th><th>batch</th>"
        t += "<th>generator cores</th><th class=\"text\">ended</th></tr>\n"
        for (i, l) in report.levels.enumerated() {
            func cell(_ field: String, _ value: String, _ cls: String = "") -> String {
                numberCell("level", i, field, value, cls)
            }
            t += "<tr><td class=\"text\">\(escape(l.label))</td>"
            t += cell("throughput", format(l.throughput, 0))
            t +=
                cell("p50", format(l.latency.p50, 1)) + cell("p90", format(l.latency.p90, 1))
                + cell("p95", format(l.latency.p95, 1))
            t +=
                cell("p99", format(l.latency.p99, 1)) + cell("p999", format(l.latency.p999, 1))
                + cell("max", format(l.latency.max, 1))
            t += cell("errors", "\(l.errorCount)", l.errorCount > 0 ? "bad" : "")
            t += cell("server_queue", l.server.map { format($0.queueMicros, 1) } ?? "–")
            t += cell("server_compute", l.server.map { format($0.computeMicros, 1) } ?? "–")
            t += cell("server_batch", l.server.map { format($0.meanBatchSize, 2) } ?? "–")
            t += cell("generator_cores", format(l.generatorCores, 2), l.generatorBound ? "warn" : "")
            t += "<td class=\"text\(l.endedWell ? "" : " warn")\">\(escape(l.ending))</td></tr>\n"
        }
        return t + "</table>\n"
    }

    /// A table cell the tests (and anyone scripting over the report) find by its attributes.
    private static func numberCell(_ kind: String, _ index: Int, _ field: String, _ value: String, _ cls: String)
        -> String
    {
        "<td data-\(kind)=\"\(index)\" data-field=\"\(field)\"\(cls.isEmpty ? "" : " class=\"\(cls)\"")>\(value)</td>"
    }

    private static func eventTable(_ events: [ActionEvent]) -> String {
        var t = "<h2>Management actions under load</h2>\n<table id=\"events\">\n"
        t += "<tr><th class=\"text\">action</th><th>at s</th><th>took ms</th><th class=\"text\">outcome</th>"
        t +=
            "<th>errors before</th><th>p99 before µs</th><th>errors after</th><th>p99 after µs</th><th>p99 after / before</th></tr>\n"
        for (i, e) in events.enumerated() {
            func cell(_ field: String, _ value: String, _ cls: String = "") -> String {
                numberCell("event", i, field, value, cls)
            }
            let ratio = e.before.p99 > 0 ? format(e.after.p99 / e.before.p99, 2) + "×" : "–"
            t +=
                "<tr><td class=\"text\">\(escape(e.action))</td>" + cell("at", format(e.at, 1))
                + cell("took", format(e.tookMicros / 1000, 1))
            t += "<td class=\"text\(e.succeeded ? "" : " bad")\">\(escape(e.outcome))</td>"
            t +=
                cell("before_errors", "\(e.before.errors)", e.before.errors > 0 ? "bad" : "")
                + cell("before_p99", format(e.before.p99, 1))
            t +=
                cell("after_errors", "\(e.after.errors)", e.after.errors > 0 ? "bad" : "")
                + cell("after_p99", format(e.after.p99, 1))
            t += "<td>\(ratio)</td></tr>\n"
        }
        return t + "</table>\n"
    }

    private static func notes(_ report: BenchReport) -> String {
        var items: [String] = []
        for l in report.levels where l.generatorBound {
            items.append(
                l.mode == "open" && !l.stable
                    ? "At \(escape(l.label)) the generator fell behind its schedule: the figures understate the load."
                    : "At \(escape(l.label)) the generator used \(format(l.generatorCores, 2)) cores on \(l.generatorLoops) event loop(s): it may be the bottleneck. Add --connections, or run generators on another machine."
            )
        }
        for l in report.levels where l.mode == "closed" && !l.stable && l.stopReason == "window limit" {
            items.append("At \(escape(l.label)) throughput did not settle within the window limit.")
        }
        let versions = Set(report.levels.flatMap { $0.versions.keys })
        if versions.count > 1 {
            let counts = versions.sorted().map { v in
                "v\(escape(v)): \(report.levels.reduce(0) { $0 + ($1.versions[v] ?? 0) })"
            }
            items.append("Answered by several versions: " + counts.joined(separator: ", ") + ".")
        }
        guard !items.isEmpty else { return "" }
        return "<h2>Notes</h2>\n<ul>\n" + items.map { "<li>\($0)</li>\n" }.joined() + "</ul>\n"
    }

    // MARK: Charts

    private static let palette = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed"]

    private struct Frame {
        let width = 1000.0, height = 300.0
        let left = 70.0, right = 20.0, top = 15.0, bottom = 40.0
        var plotWidth: Double { self.width - self.left - self.right }
        var plotHeight: Double { self.height - self.top - self.bottom }
    }

    /// Round tick values covering 0…max.
    private static func ticks(upTo max: Double) -> [Double] {
        guard max > 0 else { return [0, 1] }
        let raw = max / 5
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        return stride(from: 0.0, through: max + step * 0.999, by: step).map { $0 }
    }

    private static func svgOpen(_ f: Frame, label: String) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(f.width)) \(Int(f.height))\" width=\"100%\" role=\"img\" aria-label=\"\(escape(label))\">\n"
    }

    private static func yAxis(_ f: Frame, ticks: [Double], unit: String, decimals: Int) -> String {
        var s = ""
        let top = ticks.last ?? 1
        for t in ticks {
            let y = f.top + f.plotHeight * (1 - t / top)
            s += "<line x1=\"\(f.left)\" x2=\"\(f.width - f.right)\" y1=\"\(r(y))\" y2=\"\(r(y))\" stroke=\"#eef0f2\"/>"
            s += "<text x=\"\(f.left - 6)\" y=\"\(r(y + 4))\" text-anchor=\"end\">\(format(t, decimals))</text>\n"
        }
        s +=
            "<text x=\"14\" y=\"\(r(f.top + f.plotHeight / 2))\" transform=\"rotate(-90 14 \(r(f.top + f.plotHeight / 2)))\" text-anchor=\"middle\">\(escape(unit))</text>\n"
        return s
    }

    private static func throughputChart(_ report: BenchReport) -> String {
        let f = Frame()
        let levels = report.levels
        let ticks = ticks(upTo: levels.map(\.throughput).max() ?? 0)
        let top = ticks.last ?? 1
        var s = svgOpen(f, label: "throughput per level") + yAxis(f, ticks: ticks, unit: "req/s", decimals: 0)
        let slot = f.plotWidth / Double(levels.count)
        for (i, l) in levels.enumerated() {
            let h = f.plotHeight * l.throughput / top
            let x = f.left + slot * Double(i) + slot * 0.2
            s +=
                "<rect x=\"\(r(x))\" y=\"\(r(f.top + f.plotHeight - h))\" width=\"\(r(slot * 0.6))\" height=\"\(r(h))\" fill=\"\(l.errorCount > 0 ? "#dc2626" : "#2563eb")\"><title>\(escape(l.label)): \(format(l.throughput, 0)) req/s</title></rect>"
            s +=
                "<text x=\"\(r(x + slot * 0.3))\" y=\"\(r(f.top + f.plotHeight - h - 4))\" text-anchor=\"middle\">\(format(l.throughput, 0))</text>"
            s +=
                "<text x=\"\(r(x + slot * 0.3))\" y=\"\(r(f.height - f.bottom + 16))\" text-anchor=\"middle\">\(escape(l.label))</text>\n"
        }
        return s + "</svg>\n"
    }

    private static func percentileChart(_ report: BenchReport) -> String {
        let f = Frame()
        let levels = report.levels
        let series: [(String, KeyPath<LatencySummary, Double>)] = [
            ("p50", \.p50), ("p90", \.p90), ("p99", \.p99), ("p99.9", \.p999),
        ]
        let ticks = ticks(upTo: levels.map(\.latency.p999).max() ?? 0)
        let top = ticks.last ?? 1
        var s = svgOpen(f, label: "latency percentiles per level") + yAxis(f, ticks: ticks, unit: "µs", decimals: 0)
        let slot = f.plotWidth / Double(levels.count)
        func x(_ i: Int) -> Double { f.left + slot * (Double(i) + 0.5) }
        for (i, l) in levels.enumerated() {
            s +=
                "<text x=\"\(r(x(i)))\" y=\"\(r(f.height - f.bottom + 16))\" text-anchor=\"middle\">\(escape(l.label))</text>\n"
        }
        for (k, (name, path)) in series.enumerated() {
            let color = palette[k % palette.count]
            let points = levels.enumerated().map { i, l in
                "\(r(x(i))),\(r(f.top + f.plotHeight * (1 - l.latency[keyPath: path] / top)))"
            }
            s +=
                "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points.joined(separator: " "))\"/>\n"
            for (i, l) in levels.enumerated() {
                let y = f.top + f.plotHeight * (1 - l.latency[keyPath: path] / top)
                s +=
                    "<circle cx=\"\(r(x(i)))\" cy=\"\(r(y))\" r=\"3\" fill=\"\(color)\"><title>\(escape(l.label)) \(name): \(format(l.latency[keyPath: path], 1)) µs</title></circle>"
            }
            s += "\n"
        }
        s += "</svg>\n"
        return s + legend(series.enumerated().map { ($1.0, palette[$0 % palette.count]) })
    }

    /// p50 and p99 of every window across the run; warm-up windows faded, level boundaries
    /// marked, windows with errors in red, management actions as vertical lines.
    private static func timeline(_ report: BenchReport) -> String {
        let f = Frame()
        let windows = report.levels.flatMap(\.windows)
        guard let first = windows.first else { return "<p>No windows were measured.</p>\n" }
        let start = first.start
        let end = windows.map { $0.start + $0.seconds }.max() ?? start + 1
        let span = max(end - start, 1e-3)
        let ticks = ticks(upTo: windows.map(\.p99).max() ?? 0)
        let top = ticks.last ?? 1
        func x(_ t: Double) -> Double { f.left + f.plotWidth * (t - start) / span }
        func y(_ v: Double) -> Double { f.top + f.plotHeight * (1 - min(v, top) / top) }
        var s = svgOpen(f, label: "latency over time") + yAxis(f, ticks: ticks, unit: "µs", decimals: 0)
        // Levels as alternating bands, labelled.
        for (i, l) in report.levels.enumerated() {
            guard let a = l.windows.first, let b = l.windows.last else { continue }
            let x0 = x(a.start)
            let x1 = x(b.start + b.seconds)
            if i % 2 == 1 {
                s +=
                    "<rect x=\"\(r(x0))\" y=\"\(f.top)\" width=\"\(r(x1 - x0))\" height=\"\(f.plotHeight)\" fill=\"#f6f8fa\"/>"
            }
            s +=
                "<text x=\"\(r((x0 + x1) / 2))\" y=\"\(r(f.height - f.bottom + 30))\" text-anchor=\"middle\">\(escape(l.label))</text>\n"
            if let w = l.windows.first(where: { $0.warmup }) {
                s +=
                    "<rect x=\"\(r(x(w.start)))\" y=\"\(f.top)\" width=\"\(r(x(w.start + w.seconds) - x(w.start)))\" height=\"\(f.plotHeight)\" fill=\"#fff7ed\"><title>warm-up (not counted)</title></rect>"
            }
        }
        // Seconds along the bottom.
        let secondTicks = Self.ticks(upTo: span).filter { $0 <= span }
        let decimals = secondTicks.allSatisfy { $0 == $0.rounded() } ? 0 : 1
        for t in secondTicks {
            s +=
                "<text x=\"\(r(x(start + t)))\" y=\"\(r(f.height - f.bottom + 14))\" text-anchor=\"middle\">\(format(t, decimals)) s</text>"
        }
        s += "\n"
        for (k, (name, path)) in [("p50", \WindowSample.p50), ("p99", \WindowSample.p99)].enumerated() {
            let color = palette[k == 0 ? 0 : 3]
            for l in report.levels {
                let points = l.windows.filter { $0.requests > 0 }.map { w in
                    "\(r(x(w.start + w.seconds / 2))),\(r(y(w[keyPath: path])))"
                }
                if points.count > 1 {
                    s +=
                        "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(points.joined(separator: " "))\"/>\n"
                }
                for w in l.windows where w.requests > 0 {
                    s +=
                        "<circle cx=\"\(r(x(w.start + w.seconds / 2)))\" cy=\"\(r(y(w[keyPath: path])))\" r=\"2.5\" fill=\"\(color)\"\(w.warmup ? " fill-opacity=\"0.4\"" : "")><title>\(format(w.start - start, 1)) s \(name): \(format(w[keyPath: path], 1)) µs, \(format(w.throughput, 0)) req/s\(w.errors > 0 ? ", \(w.errors) errors" : "")</title></circle>"
                }
                s += "\n"
            }
        }
        // The server's own time per request (queue + compute), where it was asked.
        for l in report.levels {
            let served = l.windows.compactMap { w in w.server.map { (w, $0) } }.filter { $0.1.requests > 0 }
            let points = served.map { w, t in
                "\(r(x(w.start + w.seconds / 2))),\(r(y(t.queueMicros + t.computeMicros)))"
            }
            if points.count > 1 {
                s +=
                    "<polyline fill=\"none\" stroke=\"\(palette[1])\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\" points=\"\(points.joined(separator: " "))\"/>\n"
            }
            for (w, t) in served {
                s +=
                    "<circle cx=\"\(r(x(w.start + w.seconds / 2)))\" cy=\"\(r(y(t.queueMicros + t.computeMicros)))\" r=\"2\" fill=\"\(palette[1])\"><title>\(format(w.start - start, 1)) s server: queue \(format(t.queueMicros, 1)) µs + compute \(format(t.computeMicros, 1)) µs, batch \(format(t.meanBatchSize, 1))</title></circle>"
            }
        }
        for w in windows where w.errors > 0 {
            s +=
                "<rect x=\"\(r(x(w.start)))\" y=\"\(r(f.top + f.plotHeight - 6))\" width=\"\(r(x(w.start + w.seconds) - x(w.start)))\" height=\"6\" fill=\"#dc2626\"><title>\(w.errors) errors</title></rect>"
        }
        for e in report.levels.flatMap(\.events) {
            s +=
                "<line x1=\"\(r(x(e.at)))\" x2=\"\(r(x(e.at)))\" y1=\"\(f.top)\" y2=\"\(f.top + f.plotHeight)\" stroke=\"#7c3aed\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>"
            s += "<text x=\"\(r(x(e.at) + 4))\" y=\"\(r(f.top + 12))\">\(escape(e.action))</text>\n"
        }
        s += "</svg>\n"
        var items = [("p50", palette[0]), ("p99", palette[3]), ("errors", "#dc2626")]
        if windows.contains(where: { $0.server != nil }) {
            items.insert(("server queue + compute (mean)", palette[1]), at: 2)
        }
        if !report.levels.flatMap(\.events).isEmpty { items.append(("management action", "#7c3aed")) }
        return s + legend(items)
    }

    private static func legend(_ items: [(String, String)]) -> String {
        "<p class=\"legend\">"
            + items.map { "<span><i style=\"background: \($0.1)\"></i>\(escape($0.0))</span>" }.joined() + "</p>\n"
    }

    // MARK: Formatting

    private static func r(_ x: Double) -> String { String(format: "%.1f", x.isFinite ? x : 0) }

    static func format(_ x: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", x.isFinite ? x : 0) }

    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text {
            // XML allows no C0 control characters but tab, newline and return.
            if let ascii = c.asciiValue, ascii < 0x20, ascii != 0x09, ascii != 0x0A, ascii != 0x0D {
                out += "\u{FFFD}"
                continue
            }
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }

    /// The report as JSON that cannot end the script element or break XML: `<`, `>` and `&`
    /// are written as JSON escapes.
    static func embeddedJSON(_ report: BenchReport) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(report)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
        return json.replacingOccurrences(of: "<", with: "\\u003c").replacingOccurrences(of: ">", with: "\\u003e")
            .replacingOccurrences(of: "&", with: "\\u0026")
    }
}
