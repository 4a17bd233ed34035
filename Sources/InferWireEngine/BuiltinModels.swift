import Foundation
public import InferWireCore
public import InferWireProto

/// `platform: "identity"`: returns each input unchanged as the output at the same position.
/// The smallest real model: it exercises the whole request path at no compute cost.
public struct IdentityModelLoader: ModelLoader {
    public init() {}
    public var platform: String { "identity" }

    public func load(configuration: ModelConfiguration, versionDirectory: String) throws -> any InferenceModel {
        let signature = try ModelSignature(configuration: configuration)
        guard signature.inputs.count == signature.outputs.count else {
            throw InferWireError(code: .invalidArgument, message: "identity needs as many outputs as inputs")
        }
        for (input, output) in zip(signature.inputs, signature.outputs)
        where input.dataType != output.dataType || input.shape != output.shape {
            throw InferWireError(
                code: .invalidArgument,
                message: "identity output '\(output.name)' must have the datatype and shape of input '\(input.name)'")
        }
        return IdentityModel(signature: signature)
    }
}

struct IdentityModel: InferenceModel {
    let signature: ModelSignature
    var isLightweight: Bool { true }

    func execute(_ inputs: [Tensor]) throws -> [Tensor] {
        zip(inputs, self.signature.outputs).map { input, spec in
            Tensor(name: spec.name, dataType: input.dataType, shape: input.shape, data: input.data)
        }
    }
}

/// `platform: "add_sub"`: two inputs of one numeric type and shape; outputs their
/// elementwise sum and difference (integers wrap on overflow).
public struct AddSubModelLoader: ModelLoader {
    public init() {}
    public var platform: String { "add_sub" }

    public func load(configuration: ModelConfiguration, versionDirectory: String) throws -> any InferenceModel {
        let signature = try ModelSignature(configuration: configuration)
        guard signature.inputs.count == 2, signature.outputs.count == 2 else {
            throw InferWireError(code: .invalidArgument, message: "add_sub needs exactly 2 inputs and 2 outputs")
        }
        let dataType = signature.inputs[0].dataType
        let shape = signature.inputs[0].shape
        guard [.fp32, .fp64, .int32, .int64].contains(dataType) else {
            throw InferWireError(
                code: .invalidArgument, message: "add_sub supports FP32, FP64, INT32 and INT64, not \(dataType.name)")
        }
        for spec in signature.inputs + signature.outputs where spec.dataType != dataType || spec.shape != shape {
            throw InferWireError(
                code: .invalidArgument,
                message: "add_sub: '\(spec.name)' must be \(dataType.name) \(shape) like the first input")
        }
        return AddSubModel(signature: signature, dataType: dataType)
    }
}

struct AddSubModel: InferenceModel {
    let signature: ModelSignature
    let dataType: DataType
    var isLightweight: Bool { true }

    func execute(_ inputs: [Tensor]) throws -> [Tensor] {
        let a = inputs[0]
        let b = inputs[1]
        // Dynamic dims are free per input, so check the two agree.
        guard a.shape == b.shape else {
            throw InferWireError(
                code: .invalidArgument, message: "add_sub inputs must have one shape; got \(a.shape) and \(b.shape)")
        }
        let (sum, difference): (Data, Data)
        switch self.dataType {
        case .fp32: (sum, difference) = Self.combine(a.data, b.data, Float.self, +, -)
        case .fp64: (sum, difference) = Self.combine(a.data, b.data, Double.self, +, -)
        case .int32: (sum, difference) = Self.combine(a.data, b.data, Int32.self, &+, &-)
        default: (sum, difference) = Self.combine(a.data, b.data, Int64.self, &+, &-)
        }
        return [
            Tensor(name: self.signature.outputs[0].name, dataType: self.dataType, shape: a.shape, data: sum),
            Tensor(name: self.signature.outputs[1].name, dataType: self.dataType, shape: a.shape, data: difference),
        ]
    }

    private static func combine<T>(
        _ a: Data, _ b: Data, _: T.Type, _ plus: (T, T) -> T, _ minus: (T, T) -> T
    ) -> (Data, Data) {
        let count = a.count / MemoryLayout<T>.stride
        let stride = MemoryLayout<T>.stride
        var sum = [T]()
        var difference = [T]()
        sum.reserveCapacity(count)
        difference.reserveCapacity(count)
        // Wire bytes carry no alignment guarantee: load element by element.
        a.withUnsafeBytes { ra in
            b.withUnsafeBytes { rb in
                for i in 0..<count {
                    let x = ra.loadUnaligned(fromByteOffset: i * stride, as: T.self)
                    let y = rb.loadUnaligned(fromByteOffset: i * stride, as: T.self)
                    sum.append(plus(x, y))
                    difference.append(minus(x, y))
                }
            }
        }
        return (sum.withUnsafeBytes { Data($0) }, difference.withUnsafeBytes { Data($0) })
    }
}
