import Foundation
import InferWireCore
import InferWireProto
import NIOCore
import Testing

@testable import InferWireBench

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// Collects what the tests check from the report's markup.
final class ReportScanner: NSObject, XMLParserDelegate {
    /// Table cells by "level/field" or "event/field".
    var cells: [String: String] = [:]
    var embeddedJSON = ""
    var svgCount = 0
    var externalReferences: [String] = []
    private var currentKey: String?
    private var inJSON = false
    private var text = ""

    func parser(
        _ parser: XMLParser, didStartElement element: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        if element == "svg" { self.svgCount += 1 }
        for (name, value) in attributes where ["src", "href", "xlink:href"].contains(name) {
            self.externalReferences.append(value)
        }
        if element == "td", let field = attributes["data-field"] {
            if let level = attributes["data-level"] { self.currentKey = "level\(level)/\(field)" }
            if let event = attributes["data-event"] { self.currentKey = "event\(event)/\(field)" }
            self.text = ""
        }
        if element == "script" {
            if attributes["type"] != "application/json" {
                self.externalReferences.append("script of type \(attributes["type"] ?? "none")")
            }
            self.inJSON = true
            self.text = ""
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { self.text += string }

    func parser(_ parser: XMLParser, didEndElement element: String, namespaceURI: String?, qualifiedName: String?) {
        if element == "td", let key = self.currentKey {
            self.cells[key] = self.text
            self.currentKey = nil
        }
        if element == "script" {
            self.embeddedJSON = self.text
            self.inJSON = false
        }
    }
}

@Suite("HTML report")
struct ReportTests {
    func scan(_ html: String) throws -> ReportScanner {
        let parser = XMLParser(data: Data(html.utf8))
        let scanner = ReportScanner()
        parser.delegate = scanner
        let ok = parser.parse()
        #expect(
            ok,
            "the report is not well-formed: \(parser.parserError.map { "\($0)" } ?? "?") at line \(parser.lineNumber)")
        return scanner
    }

    @Test("the report parses, and every number in its tables equals the JSON report's")
    func numbersMatchJSON() throws {
        let report = sampleReport()
        let html = HTMLReport.render(report)
        let scanner = try scan(html)
        // The JSON that --json writes, read back as plain JSON.
        let json = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(report)) as? [String: Any])
        let levels = try #require(json["levels"] as? [[String: Any]])
        #expect(levels.count == 2)
        func number(_ key: String) throws -> Double {
            let text = try #require(scanner.cells[key], "no cell \(key)")
            return try #require(Double(text), "cell \(key) is '\(text)'")
        }
        for (i, level) in levels.enumerated() {
            let latency = try #require(level["latency"] as? [String: Double])
            #expect(abs(try number("level\(i)/throughput") - (level["throughput"] as! Double)) <= 0.501)
            for field in ["p50", "p90", "p95", "p99", "p999", "max"] {
                #expect(abs(try number("level\(i)/\(field)") - latency[field]!) <= 0.0501, "\(field) of level \(i)")
            }
            let errors = (level["errors"] as? [String: Int] ?? [:]).values.reduce(0, +)
            #expect(try number("level\(i)/errors") == Double(errors))
            #expect(abs(try number("level\(i)/generator_cores") - (level["generatorCores"] as! Double)) <= 0.00501)
            if let server = level["server"] as? [String: Any] {
                #expect(abs(try number("level\(i)/server_queue") - (server["queueMicros"] as! Double)) <= 0.0501)
                #expect(abs(try number("level\(i)/server_compute") - (server["computeMicros"] as! Double)) <= 0.0501)
            } else {
                #expect(scanner.cells["level\(i)/server_queue"] == "–")
            }
        }
        let event = try #require((levels[0]["events"] as? [[String: Any]])?.first)
        let before = try #require(event["before"] as? [String: Any])
        #expect(abs(try number("event0/before_p99") - (before["p99"] as! Double)) <= 0.0501)
        #expect(try number("event0/before_errors") == Double(before["errors"] as! Int))
        #expect(abs(try number("event0/took") - (event["tookMicros"] as! Double) / 1000) <= 0.0501)
    }

    @Test("the report is self-contained and embeds the run's JSON intact")
    func selfContained() throws {
        let report = sampleReport()
        let html = HTMLReport.render(report)
        let scanner = try scan(html)
        #expect(scanner.externalReferences.isEmpty)
        #expect(!html.contains("@import") && !html.contains("url("))
        #expect(scanner.svgCount == 3)  // throughput, percentiles, timeline
        let embedded = try JSONDecoder().decode(BenchReport.self, from: Data(scanner.embeddedJSON.utf8))
        #expect(embedded == report)
        // Markup in a string (the action's outcome) is escaped, not interpreted.
        #expect(html.contains("stable 2 &lt;was 1&gt; &amp; &quot;done&quot;"))
    }

    @Test("a single level with no answers still renders")
    func empty() throws {
        var report = sampleReport()
        report.levels = [
            LevelResult(
                mode: "closed", concurrency: 1, askedRate: 0, requests: 0, errors: ["UNAVAILABLE": 5], throughput: 0,
                latency: LatencySummary(makeLatencyHistogram()), windows: [], stable: false, stopReason: "window limit",
                versions: [:])
        ]
        let scanner = try scan(HTMLReport.render(report))
        #expect(scanner.cells["level0/errors"] == "5")
    }
}

@Suite("NumPy input files")
struct NumpyFileTests {
    /// An .npy file as NumPy writes it: magic, version, little-endian header length,
    /// a dict literal padded with spaces to a 64-byte boundary, then the data.
    func npy(_ header: String, data: [UInt8], version: UInt8 = 1) -> Data {
        let prefix = version == 1 ? 10 : 12
        var text = header
        while (prefix + text.utf8.count + 1) % 64 != 0 { text += " " }
        text += "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version, 0]
        let n = text.utf8.count
        bytes += version == 1 ? [UInt8(n & 0xFF), UInt8(n >> 8)] : [UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), 0, 0]
        return Data(bytes + Array(text.utf8) + data)
    }

    @Test("a float32 matrix is read with its shape and values")
    func float32() throws {
        let values: [Float] = [1.5, -2, 3.25, 0, 7, 8]
        let data = values.withUnsafeBytes { Array($0) }
        let tensor = try NumpyFile.tensor(
            name: "X", contents: npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data: data))
        #expect(tensor.shape == [2, 3])
        #expect(tensor.dataType == .fp32)
        #expect(tensor.values(as: Float.self) == values)
    }

    @Test("version 2 headers, int64 vectors and scalars are read")
    func otherForms() throws {
        let values: [Int64] = [5, -6, 7]
        let vector = try NumpyFile.tensor(
            name: "I",
            contents: npy(
                "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", data: values.withUnsafeBytes { Array($0) },
                version: 2))
        #expect(vector.shape == [3])
        #expect(vector.values(as: Int64.self) == values)
        let scalar = try NumpyFile.tensor(
            name: "S",
            contents: npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
                data: [Double(2.5)].withUnsafeBytes { Array($0) }))
        #expect(scalar.shape == [])
        #expect(scalar.values(as: Double.self) == [2.5])
    }

    @Test("bad files get INVALID_ARGUMENT with the reason, before any data is copied")
    func badFiles() {
        func reason(_ contents: Data) -> String? {
            do {
                _ = try NumpyFile.tensor(name: "X", contents: contents)
                return nil
            } catch {
                #expect(error.code == .invalidArgument)
                return error.message
            }
        }
        #expect(reason(Data("not numpy at all".utf8))?.contains("magic") == true)
        #expect(
            reason(npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", data: [0, 0, 0, 0]))?.contains(
                "dtype") == true)
        #expect(
            reason(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data: [0, 0, 0, 0]))?.contains(
                "needs more") == true)
        // A shape whose product overflows must not be trusted.
        #expect(
            reason(
                npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", data: [0, 0, 0, 0])
            ) != nil)
        #expect(
            reason(
                npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", data: Array(repeating: 0, count: 16)))?
                .contains("Fortran") == true)
        #expect(
            reason(
                npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", data: Array(repeating: 0, count: 8)))?
                .contains("holds") == true)
        var truncated = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", data: [])
        truncated.removeLast(20)
        #expect(reason(truncated)?.contains("truncated") == true)
    }
}

@Suite("Response skimming")
struct ResponseSkimTests {
    @Test("the model version is read from an encoded InferResponse without decoding its outputs")
    func version() throws {
        for version in [1, 2, 300, Int64.max] as [Int64] {
            var response = Inferwire_V1_InferResponse()
            response.modelName = "fraud"
            response.id = "abc"
            var output = Inferwire_V1_Tensor()
            output.name = "Y"
            output.shape = [1, 4]
            output.rawContents = Data(repeating: 7, count: 16)
            response.outputs = [output]
            response.modelVersion = version
            let bytes: [UInt8] = try response.serializedBytes()
            #expect(modelVersion(inResponse: ByteBuffer(bytes: bytes)) == version)
        }
        #expect(modelVersion(inResponse: ByteBuffer(bytes: [0x0A, 0xFF])) == 0)  // truncated: no version
    }
}
