import ArgumentParser
import Foundation
import InferWireCore
import InferWireONNX
import InferWireProto

/// Runs ONNX's node test cases (the `onnx` package's `backend/test/data/node/*`: a
/// `model.onnx` and `test_data_set_*/{input,output}_N.pb`) through InferWire's runtime and
/// compares the outputs, as ONNX's backend tests do (rtol 1e-3, atol 1e-7; FP16 and BF16
/// within two units in their last place, as ONNX's runner allows BF16). Prints one line
/// per case and a summary per operator; `scripts/onnx-node-tests` fetches the cases.
@main
struct OnnxConformance: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inferwire-onnx-conformance",
        abstract: "ONNX node test cases through InferWire's runtime: pass, wrong, refused.")

    @Argument(help: "The node test directory (onnx/backend/test/data/node).")
    var directory: String

    @Option(help: "Only cases whose name starts with test_<op> for these operators (comma-separated, lowercase).")
    var ops: String?

    @Flag(help: "Print only the summary.")
    var quiet = false

    enum Outcome: String {
        case pass, wrong, refused, failed
    }

    func run() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: self.directory).sorted()
        let wanted = self.ops.map { Set($0.split(separator: ",").map { "test_" + $0.lowercased() }) }
        var totals: [Outcome: Int] = [:]
        var inScope: [Outcome: Int] = [:]
        var byOperator: [String: [Outcome: Int]] = [:]
        let implemented = OnnxRuntimeOperators.implemented
        for name in names {
            let path = self.directory + "/" + name
            guard FileManager.default.fileExists(atPath: path + "/model.onnx") else { continue }
            let operators = try Self.operators(path + "/model.onnx")
            if let wanted, !wanted.contains(where: { name == $0 || name.hasPrefix($0 + "_") }) { continue }
            let (outcome, detail) = Self.runCase(path)
            totals[outcome, default: 0] += 1
            let scoped = operators.isSubset(of: implemented)
            if scoped { inScope[outcome, default: 0] += 1 }
            if operators.count == 1 { byOperator[operators.first!, default: [:]][outcome, default: 0] += 1 }
            if !self.quiet {
                print(
                    "\(outcome.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)) \(scoped ? "*" : " ") \(name)  \(detail)")
            }
        }
        print("\nsingle-operator cases per operator (pass/wrong/refused/failed):")
        for (op, counts) in byOperator.sorted(by: { $0.key < $1.key }) {
            print(
                "  \(op.padding(toLength: 28, withPad: " ", startingAt: 0)) \(counts[.pass] ?? 0)/\(counts[.wrong] ?? 0)/\(counts[.refused] ?? 0)/\(counts[.failed] ?? 0)"
            )
        }
        let scopedTotal = inScope.values.reduce(0, +)
        print(
            String(
                format: "\n%d cases (marked *) use only operators InferWire implements: %d pass (%.1f %%), %d wrong, %d refused, %d failed",
                scopedTotal, inScope[.pass] ?? 0, scopedTotal > 0 ? 100 * Double(inScope[.pass] ?? 0) / Double(scopedTotal) : 0,
                inScope[.wrong] ?? 0, inScope[.refused] ?? 0, inScope[.failed] ?? 0))
        let total = totals.values.reduce(0, +)
        let passed = totals[.pass] ?? 0
        // For scripts/test: wrong answers and run-time failures of loaded models fail; refusals at
        // load are gaps, listed above, not failures.
        print(
            "ONNX node cases: \(passed) passed, \((totals[.wrong] ?? 0) + (totals[.failed] ?? 0)) failed, \(totals[.refused] ?? 0) refused at load"
        )
        print(
            String(
                format: "\n%d cases: %d pass (%.1f %%), %d wrong, %d refused at load, %d failed when run", total, passed,
                total > 0 ? 100 * Double(passed) / Double(total) : 0, totals[.wrong] ?? 0, totals[.refused] ?? 0,
                totals[.failed] ?? 0))
    }

    /// The operators of a case's graph (ML ones as `ai.onnx.ml.<name>`).
    static func operators(_ file: String) throws -> Set<String> {
        let model = try Onnx_ModelProto(serializedBytes: Data(contentsOf: URL(fileURLWithPath: file)))
        return Set(
            model.graph.node.map { node in
                (node.domain.isEmpty || node.domain == "ai.onnx" ? "" : node.domain + ".") + node.opType
            })
    }

    static func runCase(_ path: String) -> (Outcome, String) {
        let config = ModelConfiguration(name: URL(fileURLWithPath: path).lastPathComponent, platform: "onnx")
        let model: any InferenceModel
        do {
            model = try OnnxModelLoader().load(configuration: config, versionDirectory: path)
        } catch {
            return (.refused, Self.message(error))
        }
        let sets = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter {
            $0.hasPrefix("test_data_set_")
        }.sorted()
        for set in sets {
            let directory = path + "/" + set
            do {
                let inputs = try Self.tensors(in: directory, prefix: "input_").enumerated().map { index, proto in
                    try OnnxTensorConversion.tensor(
                        proto, name: index < model.signature.inputs.count ? model.signature.inputs[index].name : proto.name)
                }
                let expected = try Self.tensors(in: directory, prefix: "output_")
                let outputs = try model.execute(inputs)
                guard outputs.count >= expected.count else {
                    return (.wrong, "\(set): \(outputs.count) outputs, expected \(expected.count)")
                }
                for (index, proto) in expected.enumerated() {
                    let want = try OnnxTensorConversion.tensor(proto, name: "")
                    if let difference = Self.difference(outputs[index], want) {
                        return (.wrong, "\(set) output \(index): \(difference)")
                    }
                }
            } catch {
                return (.failed, "\(set): \(Self.message(error))")
            }
        }
        return (.pass, "")
    }

    static func message(_ error: any Error) -> String {
        (error as? InferWireError)?.message ?? "\(error)"
    }

    static func tensors(in directory: String, prefix: String) throws -> [Onnx_TensorProto] {
        var result: [Onnx_TensorProto] = []
        var index = 0
        while FileManager.default.fileExists(atPath: "\(directory)/\(prefix)\(index).pb") {
            result.append(
                try Onnx_TensorProto(
                    serializedBytes: Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(prefix)\(index).pb"))))
            index += 1
        }
        return result
    }

    /// Why `got` is not `want` (ONNX's tolerance for floats: |got − want| ≤ 1e-7 + 1e-3 |want|),
    /// or nil when it is.
    static func difference(_ got: Tensor, _ want: Tensor) -> String? {
        guard got.shape == want.shape else { return "shape \(got.shape), expected \(want.shape)" }
        guard got.dataType == want.dataType else { return "type \(got.dataType.name), expected \(want.dataType.name)" }
        func decode(_ t: Tensor) -> [Double] {
            switch t.dataType {
            case .fp32: return t.values(as: Float.self)!.map(Double.init)
            case .fp64: return t.values(as: Double.self)!
            default:
                let bits = t.data.withUnsafeBytes { raw in
                    (0..<(t.data.count / 2)).map { raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) }
                }
                return t.dataType == .fp16
                    ? bits.map { Double(Float(Float16(bitPattern: $0))) }
                    : bits.map { Double(Float(bitPattern: UInt32($0) << 16)) }
            }
        }
        // ONNX's tolerance, with its runner's two BF16 units in the last place (2^-6). FP16 gets
        // two units in its last place (2^-9) too: computed in FP32 and rounded after every
        // operator, it can land two units from a reference that rounds in another order.
        let relative = want.dataType == .fp16 ? 0x1p-9 : want.dataType == .bf16 ? 0x1p-6 : 1e-3
        func compare() -> String? {
            let a = decode(got)
            let b = decode(want)
            for (index, (x, y)) in zip(a, b).enumerated() {
                if x.isNaN && y.isNaN { continue }
                if x == y { continue }
                if !(abs(x - y) <= 1e-7 + relative * abs(y)) { return "element \(index): \(x), expected \(y)" }
            }
            return nil
        }
        switch got.dataType {
        case .fp32, .fp64, .fp16, .bf16: return compare()
        default: return got.data == want.data ? nil : "values differ"
        }
    }
}
