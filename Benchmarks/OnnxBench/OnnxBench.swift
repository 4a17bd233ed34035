import ArgumentParser
import Foundation
import InferWireCore
import InferWireONNX
import InferWireProto

/// Times InferWire's ONNX runtime on one model and one input, single-threaded, as
/// `scripts/bench-onnx` runs it beside onnxruntime. Prints the median time per call in µs.
@main
struct OnnxBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inferwire-onnxbench", abstract: "Median time per call of an ONNX model in InferWire's runtime.")

    @Option(help: "Directory holding model.onnx.")
    var model: String

    @Option(help: "Raw little-endian FP32 input file.")
    var input: String

    @Option(help: "Input shape, comma-separated.")
    var shape: String

    @Option(help: "Calls per repeat.")
    var iterations = 200

    @Option(help: "Repeats; the median is reported.")
    var repeats = 7

    func run() throws {
        var config = Inferwire_V1_ModelConfig()
        config.name = "bench"
        config.platform = "onnx"
        let model = try OnnxModelLoader().load(config: config, versionDirectory: self.model)
        let shape = self.shape.split(separator: ",").map { Int($0)! }
        let data = try Data(contentsOf: URL(fileURLWithPath: self.input))
        let input = Tensor(name: model.signature.inputs[0].name, dataType: .fp32, shape: shape, data: data)
        for _ in 0..<max(10, self.iterations / 10) { _ = try model.execute([input]) }
        var perCall: [Double] = []
        for _ in 0..<self.repeats {
            let start = ContinuousClock.now
            for _ in 0..<self.iterations { _ = try model.execute([input]) }
            let elapsed = ContinuousClock.now - start
            perCall.append(elapsed.inSeconds * 1e6 / Double(self.iterations))
        }
        print(String(format: "%.3f", perCall.sorted()[perCall.count / 2]))
    }
}
