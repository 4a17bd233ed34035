import Dispatch
import Foundation
import InferWireCore
import InferWireProto
import Testing

@testable import InferWireEngine

@Suite("Prediction log")
struct PredictionLogTests {
    func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "inferwire-predictions-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func response(_ outputs: [Tensor]) throws -> [UInt8] {
        var response = Inferwire_V1_InferResponse()
        response.modelName = "fraud"
        response.modelVersion = 2
        response.outputs = outputs.map(\.wire)
        return try response.serializedBytes()
    }

    func record(_ values: [Float], rows: Int, answer: Result<[UInt8], InferWireError>, id: String = "r1")
        -> PredictionLog.Record
    {
        PredictionLog.Record(
            time: Date(timeIntervalSince1970: 1_796_644_800), model: "fraud", version: 2, requestID: id,
            traceID: "4bf92f3577b34da6a3ce929d0e0e4736",
            inputs: [Tensor(name: "X", values: values, shape: [rows, values.count / rows])], answer: answer)
    }

    func lines(in directory: String, file: String = "predictions-000001.jsonl") throws -> [[String: Any]] {
        let text = try String(contentsOfFile: directory + "/fraud/2/" + file, encoding: .utf8)
        return try text.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    @Test("records are JSON lines per model version, with inputs, outputs, code and trace id")
    func writesRecords() throws {
        let directory = try self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try PredictionLog(configuration: .init(directory: directory, sampleRate: 1))
        let outputs = [Tensor(name: "label", values: [Int64(1), 0], shape: [2])]
        log.offer(self.record([1, 2, .nan, 4], rows: 2, answer: .success(try self.response(outputs))))
        log.offer(
            self.record(
                [5, 6], rows: 1, answer: .failure(InferWireError(code: .deadlineExceeded, message: "too late")),
                id: "r2"))
        log.flush()
        let lines = try self.lines(in: directory)
        #expect(lines.count == 2)
        let first = lines[0]
        #expect(first["model"] as? String == "fraud")
        #expect(first["version"] as? Int == 2)
        #expect(first["request_id"] as? String == "r1")
        #expect(first["trace_id"] as? String == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(first["code"] as? String == "OK")
        #expect(first["time"] as? String == "2026-12-07T12:00:00.000Z")
        let input = try #require((first["inputs"] as? [String: Any])?["X"] as? [String: Any])
        #expect(input["datatype"] as? String == "FP32")
        #expect(input["shape"] as? [Int] == [2, 2])
        // NaN has no JSON number: it is null.
        #expect((input["data"] as? [Any])?.count == 4)
        #expect((input["data"] as? [Any])?[2] is NSNull)
        let label = try #require((first["outputs"] as? [String: Any])?["label"] as? [String: Any])
        #expect(label["data"] as? [Int] == [1, 0])
        #expect(lines[1]["code"] as? String == "DEADLINE_EXCEEDED")
        #expect(lines[1]["error"] as? String == "too late")
        #expect(log.counts.written == 2)
        log.close()
    }

    @Test("per-feature statistics are kept per model version: count, mean, variance, min, max, missing")
    func featureStatistics() throws {
        let directory = try self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try PredictionLog(configuration: .init(directory: directory, sampleRate: 1))
        // Two features; rows (1, 10), (3, NaN), (5, 30).
        log.offer(
            self.record([1, 10, 3, .nan], rows: 2, answer: .failure(InferWireError(code: .internal, message: ""))))
        log.offer(self.record([5, 30], rows: 1, answer: .failure(InferWireError(code: .internal, message: ""))))
        log.flush()
        let features = log.featureStatistics(model: "fraud", version: 2)
        #expect(features.count == 2)
        #expect(features[0].input == "X" && features[0].index == 0)
        #expect(features[0].count == 3)
        #expect(abs(features[0].mean - 3) < 1e-12)
        #expect(abs(features[0].variance - 8.0 / 3) < 1e-12)
        #expect(features[0].min == 1 && features[0].max == 5)
        #expect(features[1].count == 2 && features[1].missing == 1)
        #expect(abs(features[1].mean - 20) < 1e-12)
        #expect(features[1].wire.max == 30)
        #expect(log.featureStatistics(model: "fraud", version: 1).isEmpty)
        log.close()
    }

    @Test("files rotate at the size cap, and only the newest are kept")
    func rotation() throws {
        let directory = try self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try PredictionLog(
            configuration: .init(directory: directory, sampleRate: 1, maxFileBytes: 600, maxFiles: 3))
        for index in 0..<20 {
            log.offer(
                self.record(
                    [Float](repeating: 0.25, count: 8), rows: 1,
                    answer: .failure(InferWireError(code: .internal, message: "")), id: "r\(index)"))
            log.flush()
        }
        let files = PredictionLog.Writer.numberedFiles(in: directory + "/fraud/2")
        #expect(files.count == 3)
        #expect(files.last!.number > 3)
        for file in files {
            let size = try FileManager.default.attributesOfItem(atPath: directory + "/fraud/2/" + file.name)[.size]
            #expect((size as? Int ?? 0) <= 600)
        }
        // Every line of the newest file is a whole record.
        #expect(try self.lines(in: directory, file: files.last!.name).allSatisfy { $0["model"] as? String == "fraud" })
        log.close()
    }

    @Test("with the writer held, a full buffer drops records and counts them; offering never waits")
    func fullBuffer() throws {
        let directory = try self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let gate = DispatchSemaphore(value: 0)
        let log = try PredictionLog(
            configuration: .init(directory: directory, sampleRate: 1, bufferRecords: 4), writerGate: gate)
        for index in 0..<10 {
            log.offer(
                self.record(
                    [1], rows: 1, answer: .failure(InferWireError(code: .internal, message: "")), id: "\(index)"))
        }
        #expect(log.counts.dropped == 6)
        #expect(log.counts.buffered == 4)
        gate.signal()
        log.flush()
        #expect(log.counts.written == 4)
        #expect(try self.lines(in: directory).map { $0["request_id"] as? String } == ["0", "1", "2", "3"])
        // Room again once written.
        log.offer(self.record([1], rows: 1, answer: .failure(InferWireError(code: .internal, message: "")), id: "10"))
        gate.signal()
        log.flush()
        #expect(log.counts.written == 5)
        // The writer may wait at the gate again: let it through to close.
        for _ in 0..<16 { gate.signal() }
        log.close()
        // Closed: offers are dropped, not written.
        log.offer(self.record([1], rows: 1, answer: .failure(InferWireError(code: .internal, message: ""))))
        #expect(log.counts.dropped == 7)
    }

    @Test("one request in 1/rate is sampled")
    func sampling() throws {
        let directory = try self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try PredictionLog(configuration: .init(directory: directory, sampleRate: 0.1))
        #expect(log.sample.interval == 10)
        #expect((0..<100).filter { _ in log.sample.next() }.count == 10)
        log.close()
    }
}
