import Foundation
import InferWireCore
import InferWireProto
import Testing

@testable import InferWireONNX

/// The 2-D convolution's fast paths (1×1 kernels read in place, small planes batched into
/// one GEMM, image by image otherwise) against the direct N-D convolution.
@Suite("2-D convolution")
struct ConvolutionTests {
    struct Case: Sendable, CustomStringConvertible {
        var batch: Int
        var channels = 4
        var size = (h: 9, w: 7)
        var outputs = 6
        var kernel = (3, 3)
        var strides = [1, 1]
        var dilations = [1, 1]
        var pads = [1, 1, 1, 1]
        var group = 1
        var bias = true

        var description: String {
            "batch \(batch), \(channels)→\(outputs) channels, kernel \(kernel), strides \(strides), dilations \(dilations), pads \(pads), group \(group)"
        }
    }

    static let cases: [Case] =
        [1, 3].flatMap { batch in
            [
                Case(batch: batch),
                Case(batch: batch, kernel: (1, 1), pads: [0, 0, 0, 0]),
                Case(batch: batch, kernel: (1, 1), strides: [2, 2], pads: [0, 0, 0, 0], bias: false),
                Case(
                    batch: batch, channels: 4, outputs: 6, strides: [2, 1], dilations: [2, 1], pads: [2, 0, 1, 1],
                    group: 2),
                Case(batch: batch, channels: 6, outputs: 6, kernel: (3, 3), group: 6),
                Case(batch: batch, size: (h: 5, w: 5), kernel: (5, 5), pads: [0, 0, 0, 0]),
            ]
        } + [
            // 400-pixel planes: two images per GEMM, then one alone.
            Case(batch: 3, size: (h: 20, w: 20)),
            // Planes wider than one GEMM's share: image by image.
            Case(batch: 2, size: (h: 40, w: 30)),
        ]

    @Test("every path equals the direct convolution", arguments: cases)
    func matchesDirect(_ c: Case) throws {
        var generator = SplitMix(seed: UInt64(c.batch * 31 + c.group * 7 + c.kernel.0))
        func random(_ count: Int) -> [Float] { (0..<count).map { _ in Float(generator.next() % 2001) / 1000 - 1 } }
        let xShape = [c.batch, c.channels, c.size.h, c.size.w]
        let wShape = [c.outputs, c.channels / c.group, c.kernel.0, c.kernel.1]
        let x = random(xShape.reduce(1, *))
        let w = random(wShape.reduce(1, *))
        let b = random(c.outputs)

        var model = Onnx_ModelProto()
        model.irVersion = 8
        var opset = Onnx_OperatorSetIdProto()
        opset.version = 17
        model.opsetImport = [opset]
        var node = Onnx_NodeProto()
        node.opType = "Conv"
        node.input = c.bias ? ["X", "W", "B"] : ["X", "W"]
        node.output = ["Y"]
        func ints(_ name: String, _ values: [Int]) -> Onnx_AttributeProto {
            var attribute = Onnx_AttributeProto()
            attribute.name = name
            attribute.type = .ints
            attribute.ints = values.map(Int64.init)
            return attribute
        }
        var group = Onnx_AttributeProto()
        group.name = "group"
        group.type = .int
        group.i = Int64(c.group)
        node.attribute = [
            ints("kernel_shape", [c.kernel.0, c.kernel.1]), ints("strides", c.strides),
            ints("dilations", c.dilations), ints("pads", c.pads), group,
        ]
        func initializer(_ name: String, _ shape: [Int], _ values: [Float]) -> Onnx_TensorProto {
            var tensor = Onnx_TensorProto()
            tensor.name = name
            tensor.dataType = 1
            tensor.dims = shape.map(Int64.init)
            tensor.floatData = values
            return tensor
        }
        model.graph.initializer = [initializer("W", wShape, w)] + (c.bias ? [initializer("B", [c.outputs], b)] : [])
        func value(_ name: String, _ shape: [Int]?) -> Onnx_ValueInfoProto {
            var info = Onnx_ValueInfoProto()
            info.name = name
            var type = Onnx_TypeProto.Tensor()
            type.elemType = 1
            if let shape {
                type.shape.dim = shape.map { size in
                    var dim = Onnx_TensorShapeProto.Dimension()
                    dim.dimValue = Int64(size)
                    return dim
                }
            }
            info.type.tensorType = type
            return info
        }
        model.graph.input = [value("X", xShape)]
        model.graph.output = [value("Y", nil)]
        model.graph.node = [node]
        let loaded = try load(try model.serializedData())
        let answer = try loaded.execute([Tensor(name: "X", values: x, shape: xShape)])[0]

        let window = try WindowND.make(
            kernel: [c.kernel.0, c.kernel.1],
            .init(strides: c.strides, dilations: c.dilations, pads: c.pads, autoPad: "NOTSET"))
        let direct = try convND(
            OnnxTensor(shape: xShape, floats: x), OnnxTensor(shape: wShape, floats: w),
            bias: c.bias ? OnnxTensor(shape: [c.outputs], floats: b) : nil, group: c.group, window: window)
        #expect(answer.shape == direct.shape)
        let got = answer.values(as: Float.self) ?? []
        let want = direct.floats ?? []
        #expect(got.count == want.count)
        let worst = zip(got, want).map { abs($0 - $1) }.max() ?? 0
        #expect(worst <= 1e-4, "largest difference \(worst)")
    }
}

/// A small deterministic generator for test data.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
