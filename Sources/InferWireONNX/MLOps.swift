import Foundation

/// The score transforms of the ai.onnx.ml classifiers and regressors.
enum PostTransform: String, Sendable {
    case none = "NONE"
    case softmax = "SOFTMAX"
    case logistic = "LOGISTIC"
    case softmaxZero = "SOFTMAX_ZERO"
    case probit = "PROBIT"

    init(_ c: inout NodeContext) throws {
        let name = try c.attributes.string("post_transform", default: "NONE")
        guard let value = PostTransform(rawValue: name) else {
            throw c.error("post_transform '\(name)' is not supported")
        }
        self = value
    }

    /// Transforms one row of scores in place.
    func apply(_ row: UnsafeMutableBufferPointer<Float>) {
        switch self {
        case .none: break
        case .logistic: for i in row.indices { row[i] = sigmoid(row[i]) }
        case .probit: for i in row.indices { row[i] = Float(2.0.squareRoot() * inverseErf(2 * Double(row[i]) - 1)) }
        case .softmax, .softmaxZero:
            let zero = self == .softmaxZero
            var m = -Float.infinity
            for v in row where !(zero && v == 0) { m = max(m, v) }
            var sum: Float = 0
            for i in row.indices {
                if zero && row[i] == 0 { continue }
                row[i] = expf(row[i] - m)
                sum += row[i]
            }
            for i in row.indices where !(zero && row[i] == 0) { row[i] /= sum }
        }
    }
}

/// Inverse error function (Giles' single-precision approximation, refined by two Newton steps).
func inverseErf(_ x: Double) -> Double {
    if x <= -1 { return -.infinity }
    if x >= 1 { return .infinity }
    var w = -log((1 - x) * (1 + x))
    var p: Double
    if w < 5 {
        w -= 2.5
        p = 2.81022636e-08
        for c in [
            3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503, -0.00417768164, 0.246640727,
            1.50140941,
        ] { p = c + p * w }
    } else {
        w = w.squareRoot() - 3
        p = -0.000200214257
        for c in [
            0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047, 1.00167406,
            2.83297682,
        ] { p = c + p * w }
    }
    var y = p * x
    for _ in 0..<2 { y -= (erf(y) - x) / (2 / Double.pi.squareRoot() * exp(-y * y)) }
    return y
}

/// Reads X as float rows [N, C] (a 1-D X is one row).
func featureRows(_ x: OnnxTensor, _ op: String) throws -> (values: [Float], rows: Int, columns: Int) {
    let columns = x.shape.last ?? 1
    let rows = x.rank <= 1 ? 1 : x.shape.dropLast().reduce(1, *)
    switch x.storage {
    case .float(let v): return (v, rows, columns)
    case .double(let v): return (v.map { Float($0) }, rows, columns)
    case .int64(let v): return (v.map { Float($0) }, rows, columns)
    case .int32(let v): return (v.map { Float($0) }, rows, columns)
    default: throw OnnxError("\(op) takes numeric features, got \(x.elementType)")
    }
}

/// Class labels of a classifier: int64 or strings.
enum ClassLabels: Sendable {
    case ints([Int64])
    case strings([String])

    var count: Int {
        switch self {
        case .ints(let v): v.count
        case .strings(let v): v.count
        }
    }

    static func parse(_ c: inout NodeContext, intsName: String) throws -> ClassLabels {
        if let ints = try c.attributes.int64s(intsName) { return .ints(ints) }
        if let strings = try c.attributes.strings("classlabels_strings") { return .strings(strings) }
        throw c.error("needs \(intsName) or classlabels_strings")
    }

    func tensor(_ indices: [Int]) -> OnnxTensor {
        switch self {
        case .ints(let v): OnnxTensor(shape: [indices.count], int64s: indices.map { v[$0] })
        case .strings(let v): OnnxTensor(shape: [indices.count], storage: .string(indices.map { v[$0] }))
        }
    }
}

/// X·Wᵀ + intercepts for the linear models: one row of `coefficients` per output.
func linearScores(_ x: OnnxTensor, _ coefficients: [Float], _ intercepts: [Float], outputs: Int, op: String) throws -> (
    scores: [Float], rows: Int
) {
    let (v, rows, columns) = try featureRows(x, op)
    guard columns * outputs == coefficients.count else {
        throw OnnxError("\(op): \(columns) features, but coefficients fit \(coefficients.count / outputs)")
    }
    var out = [Float](repeating: 0, count: rows * outputs)
    if !intercepts.isEmpty { for r in 0..<rows { for k in 0..<outputs { out[r * outputs + k] = intercepts[k] } } }
    v.withUnsafeBufferPointer { px in
        coefficients.withUnsafeBufferPointer { pw in
            out.withUnsafeMutableBufferPointer { po in
                sgemm(
                    px.baseAddress!, pw.baseAddress!, po.baseAddress!, m: rows, n: outputs, k: columns, transB: true,
                    beta: 1)
            }
        }
    }
    return (out, rows)
}

enum MLOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["Scaler"] = { c in
            try c.require(inputs: 1...1)
            let offset = try c.attributes.floats("offset") ?? [0]
            let scale = try c.attributes.floats("scale") ?? [1]
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Scaler")
                let (v, rows, columns) = try featureRows(x, "Scaler")
                guard offset.count == 1 || offset.count == columns, scale.count == 1 || scale.count == columns else {
                    throw OnnxError(
                        "Scaler: offset/scale have \(offset.count)/\(scale.count) values for \(columns) features")
                }
                var out = v
                for r in 0..<rows {
                    for j in 0..<columns {
                        let i = r * columns + j
                        out[i] = (out[i] - offset[offset.count == 1 ? 0 : j]) * scale[scale.count == 1 ? 0 : j]
                    }
                }
                return [OnnxTensor(shape: x.shape, floats: out)]
            }
        }
        r["Normalizer"] = { c in
            try c.require(inputs: 1...1)
            let norm = try c.attributes.string("norm", default: "MAX")
            guard ["MAX", "L1", "L2"].contains(norm) else { throw c.error("norm '\(norm)' is not supported") }
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Normalizer")
                var (out, rows, columns) = try featureRows(x, "Normalizer")
                for r in 0..<rows {
                    let row = out[(r * columns)..<((r + 1) * columns)]
                    let d: Float
                    switch norm {
                    case "MAX": d = row.max() ?? 1
                    case "L1": d = row.reduce(0) { $0 + abs($1) }
                    default: d = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    }
                    if d != 0 { for j in 0..<columns { out[r * columns + j] /= d } }
                }
                return [OnnxTensor(shape: x.shape, floats: out)]
            }
        }
        r["Binarizer"] = { c in
            try c.require(inputs: 1...1)
            let threshold = try c.attributes.float("threshold", default: 0)
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Binarizer")
                switch x.storage {
                case .float(let v): return [OnnxTensor(shape: x.shape, floats: v.map { $0 > threshold ? 1 : 0 })]
                case .double(let v):
                    return [OnnxTensor(shape: x.shape, doubles: v.map { $0 > Double(threshold) ? 1 : 0 })]
                default: throw OnnxError("Binarizer takes float or double, got \(x.elementType)")
                }
            }
        }
        r["ArrayFeatureExtractor"] = { c in
            try c.require(inputs: 2...2)
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "ArrayFeatureExtractor")
                let indices = try (try input(inputs, 1, "ArrayFeatureExtractor")).integers(
                    "ArrayFeatureExtractor indices")
                let last = x.shape.last ?? 0
                for i in indices where i < 0 || i >= last {
                    throw OnnxError("ArrayFeatureExtractor: index \(i) out of range for \(last) columns")
                }
                let rows = x.rank <= 1 ? 1 : x.shape.dropLast().reduce(1, *)
                var flat: [Int] = []
                flat.reserveCapacity(rows * indices.count)
                for r in 0..<rows { for i in indices { flat.append(r * last + i) } }
                let shape = (x.rank <= 1 ? [1] : Array(x.shape.dropLast())) + [indices.count]
                return [OnnxTensor(shape: shape, storage: try x.storage.transformed(GatherIndices(indices: flat)))]
            }
        }
        r["LinearRegressor"] = { c in
            try c.require(inputs: 1...1)
            guard let coefficients = try c.attributes.floats("coefficients") else {
                throw c.error("coefficients are required")
            }
            let intercepts = try c.attributes.floats("intercepts") ?? []
            let targets = try c.attributes.int("targets", default: 1)
            let transform = try PostTransform(&c)
            try c.attributes.checkAllUsed()
            guard targets > 0, coefficients.count % targets == 0, intercepts.isEmpty || intercepts.count == targets
            else {
                throw c.error(
                    "coefficients (\(coefficients.count)) and intercepts (\(intercepts.count)) do not fit \(targets) targets"
                )
            }
            return FunctionKernel { inputs in
                var (out, rows) = try linearScores(
                    try input(inputs, 0, "LinearRegressor"), coefficients, intercepts, outputs: targets,
                    op: "LinearRegressor")
                out.withUnsafeMutableBufferPointer { po in
                    for r in 0..<rows {
                        transform.apply(UnsafeMutableBufferPointer(rebasing: po[(r * targets)..<((r + 1) * targets)]))
                    }
                }
                return [OnnxTensor(shape: [rows, targets], floats: out)]
            }
        }
        r["LinearClassifier"] = { c in
            try c.require(inputs: 1...1, outputs: 1...2)
            guard let coefficients = try c.attributes.floats("coefficients") else {
                throw c.error("coefficients are required")
            }
            let intercepts = try c.attributes.floats("intercepts") ?? []
            let labels = try ClassLabels.parse(&c, intsName: "classlabels_ints")
            let transform = try PostTransform(&c)
            _ = try c.attributes.int("multi_class")  // informative only
            try c.attributes.checkAllUsed()
            let classCount = labels.count
            guard classCount > 0 else { throw c.error("needs at least one class label") }
            // One row of coefficients for two labels: the binary form, scoring class 1 only.
            let rowsOfWeights =
                intercepts.isEmpty ? (coefficients.count % classCount == 0 ? classCount : 1) : intercepts.count
            guard rowsOfWeights > 0, coefficients.count % rowsOfWeights == 0 else {
                throw c.error("coefficients (\(coefficients.count)) do not fit \(rowsOfWeights) classes")
            }
            let binary = rowsOfWeights == 1 && classCount == 2
            guard binary || rowsOfWeights == classCount else {
                throw c.error("\(rowsOfWeights) rows of coefficients for \(classCount) class labels")
            }
            return FunctionKernel { inputs in
                let (raw, rows) = try linearScores(
                    try input(inputs, 0, "LinearClassifier"), coefficients, intercepts, outputs: rowsOfWeights,
                    op: "LinearClassifier")
                var winners = [Int](repeating: 0, count: rows)
                var scores = [Float](repeating: 0, count: rows * classCount)
                for r in 0..<rows {
                    if binary {
                        let s = raw[r]
                        winners[r] = s > 0 ? 1 : 0
                        switch transform {
                        case .logistic:
                            scores[2 * r] = 1 - sigmoid(s)
                            scores[2 * r + 1] = sigmoid(s)
                        case .none:
                            scores[2 * r] = -s
                            scores[2 * r + 1] = s
                        default:
                            scores[2 * r] = -s
                            scores[2 * r + 1] = s
                            scores.withUnsafeMutableBufferPointer {
                                transform.apply(UnsafeMutableBufferPointer(rebasing: $0[(2 * r)..<(2 * r + 2)]))
                            }
                        }
                    } else {
                        var best = 0
                        for k in 0..<classCount where raw[r * classCount + k] > raw[r * classCount + best] { best = k }
                        winners[r] = best
                        for k in 0..<classCount { scores[r * classCount + k] = raw[r * classCount + k] }
                        scores.withUnsafeMutableBufferPointer {
                            transform.apply(
                                UnsafeMutableBufferPointer(rebasing: $0[(r * classCount)..<((r + 1) * classCount)]))
                        }
                    }
                }
                return [labels.tensor(winners), OnnxTensor(shape: [rows, classCount], floats: scores)]
            }
        }
        TreeEnsemble.register(&r)
    }
}
