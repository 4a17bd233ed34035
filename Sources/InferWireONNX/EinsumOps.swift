import Foundation

/// Einsum (numpy's `einsum`): explicit (`->`) and implicit outputs, `...` broadcasting (of any
/// rank per operand, right-aligned), repeated labels within an operand (diagonals), sums.
///
/// Each operand first loses its repeated labels (its diagonal is taken), its size-1
/// dimensions that broadcast against a larger size elsewhere, and the labels no other operand
/// and not the output use (summed). Operands are then contracted left to right, each pair as
/// one batched matrix product — the labels both keep are the batch, the labels both drop are
/// summed by the product — through `sgemm`/`dgemm` for FP32 and FP64; and the result is
/// transposed into the output's order.
enum EinsumOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["Einsum"] = { c in
            guard c.inputCount >= 1 else { throw c.error("takes at least one input") }
            try c.require(inputs: 1...c.inputCount)
            guard let text = try c.attributes.string("equation") else {
                throw c.error("attribute 'equation' is required")
            }
            try c.attributes.checkAllUsed()
            let equation: EinsumEquation
            do {
                equation = try EinsumEquation(text, operands: c.inputCount)
            } catch let error as OnnxError {
                throw c.error(error.message)
            }
            return FunctionKernel { inputs in
                let operands = try (0..<inputs.count).map { try input(inputs, $0, "Einsum") }
                return [try equation.evaluate(operands)]
            }
        }
    }
}

/// A parsed Einsum equation. Labels are character codes; `ellipsis` stands for `...`.
struct EinsumEquation: Sendable {
    static let ellipsis = -1
    /// Labels for the broadcast dimensions `...` stands for: `base + j`, right-aligned.
    static let broadcastBase = 1000

    var terms: [[Int]]
    /// The explicit output, or nil (implicit).
    var output: [Int]?

    init(_ text: String, operands: Int) throws(OnnxError) {
        let compact = text.filter { !$0.isWhitespace }
        let sides = compact.components(separatedBy: "->")
        guard sides.count <= 2 else { throw OnnxError("Einsum equation '\(text)' has more than one '->'") }
        func labels(_ term: String) throws(OnnxError) -> [Int] {
            var result: [Int] = []
            var rest = Substring(term)
            while let first = rest.first {
                if rest.hasPrefix("...") {
                    guard !result.contains(Self.ellipsis) else {
                        throw OnnxError("Einsum term '\(term)' has more than one '...'")
                    }
                    result.append(Self.ellipsis)
                    rest = rest.dropFirst(3)
                    continue
                }
                guard first.isASCII, first.isLetter, let code = first.asciiValue else {
                    throw OnnxError("Einsum equation '\(text)': '\(first)' is not a letter (a–z, A–Z) or '...'")
                }
                result.append(Int(code))
                rest = rest.dropFirst()
            }
            return result
        }
        self.terms = []
        for term in sides[0].split(separator: ",", omittingEmptySubsequences: false) {
            self.terms.append(try labels(String(term)))
        }
        guard self.terms.count == operands else {
            throw OnnxError(
                "Einsum equation '\(text)' has \(self.terms.count) operands; the node has \(operands) inputs")
        }
        if sides.count == 2 {
            let output = try labels(sides[1])
            guard Set(output).count == output.count else {
                throw OnnxError("Einsum equation '\(text)' repeats a label in its output")
            }
            let used = Set(self.terms.joined())
            for label in output where !used.contains(label) {
                throw OnnxError(
                    label == Self.ellipsis
                        ? "Einsum equation '\(text)' has '...' in its output but in no input"
                        : "Einsum equation '\(text)': output label '\(Character(UnicodeScalar(UInt8(label))))' is in no input"
                )
            }
            if used.contains(Self.ellipsis) && !output.contains(Self.ellipsis) {
                throw OnnxError("Einsum equation '\(text)': inputs have '...' but the output does not")
            }
            self.output = output
        } else {
            self.output = nil
        }
    }

    func evaluate(_ operands: [OnnxTensor]) throws -> OnnxTensor {
        let type = operands[0].storageType
        for operand in operands where operand.storageType != type {
            throw OnnxError("Einsum's inputs must share one type, got \(operands.map(\.elementType))")
        }
        // Expand '...' into broadcast labels, right-aligned across operands.
        var broadcastRank = 0
        for (term, operand) in zip(self.terms, operands) {
            let letters = term.filter { $0 != Self.ellipsis }.count
            if term.contains(Self.ellipsis) {
                guard operand.rank >= letters else {
                    throw OnnxError("Einsum operand of shape \(operand.shape) has fewer dimensions than its labels")
                }
                broadcastRank = max(broadcastRank, operand.rank - letters)
            } else if operand.rank != letters {
                throw OnnxError(
                    "Einsum operand of shape \(operand.shape) does not have the \(letters) dimensions of its labels")
            }
        }
        let broadcast = (0..<broadcastRank).map { Self.broadcastBase + $0 }
        let expanded = zip(self.terms, operands).map { term, operand -> [Int] in
            let count = operand.rank - term.filter { $0 != Self.ellipsis }.count
            return term.flatMap { $0 == Self.ellipsis ? Array(broadcast.suffix(count)) : [$0] }
        }
        let output: [Int]
        if let explicit = self.output {
            output = explicit.flatMap { $0 == Self.ellipsis ? broadcast : [$0] }
        } else {
            // numpy's implicit output: the broadcast dimensions, then the labels used once, in order.
            var counts: [Int: Int] = [:]
            for label in self.terms.joined() where label != Self.ellipsis { counts[label, default: 0] += 1 }
            output = broadcast + counts.filter { $0.value == 1 }.keys.sorted()
        }
        // Each label's size: equal wherever it is larger than 1.
        var sizes: [Int: Int] = [:]
        for (labels, operand) in zip(expanded, operands) {
            for (label, size) in zip(labels, operand.shape) {
                let known = sizes[label] ?? 1
                guard known == size || known == 1 || size == 1 else {
                    throw OnnxError("Einsum: a label has sizes \(known) and \(size) in inputs \(operands.map(\.shape))")
                }
                sizes[label] = known == 1 ? size : known
            }
        }
        switch type {
        case .float:
            return try self.contract(operands, expanded, output, sizes) {
                $0.floats!
            } wrap: {
                .float($0)
            }
        case .double:
            return try self.contract(operands, expanded, output, sizes) {
                if case .double(let v) = $0.storage { v } else { [] }
            } wrap: {
                .double($0)
            }
        case .int64:
            return try self.contract(operands, expanded, output, sizes) {
                $0.int64s!
            } wrap: {
                .int64($0)
            }
        case .int32:
            return try self.contract(operands, expanded, output, sizes) {
                if case .int32(let v) = $0.storage { v } else { [] }
            } wrap: {
                .int32($0)
            }
        default: throw OnnxError("Einsum takes numbers, got \(operands[0].elementType)")
        }
    }

    private func contract<T: EinsumElement>(
        _ operands: [OnnxTensor], _ labels: [[Int]], _ output: [Int], _ sizes: [Int: Int],
        values: (OnnxTensor) -> [T], wrap: ([T]) -> OnnxTensor.Storage
    ) throws -> OnnxTensor {
        var pending = try zip(operands, labels).map { operand, labels in
            try LabelledArray(values: values(operand), labels: labels, shape: operand.shape).prepared(sizes)
        }
        let wanted = Set(output)
        var result = pending.removeFirst()
        result = result.summed(keeping: wanted.union(pending.flatMap(\.labels)))
        while !pending.isEmpty {
            var right = pending.removeFirst()
            let later = wanted.union(pending.flatMap(\.labels))
            right = right.summed(keeping: later.union(result.labels))
            result = try result.multiplied(by: right, keeping: later)
        }
        result = result.summed(keeping: wanted)
        // Labels of size 1 everywhere may have been dropped: put them back.
        for label in output where !result.labels.contains(label) {
            result.labels.append(label)
            result.shape.append(1)
        }
        let permuted = result.permuted(output.map { result.labels.firstIndex(of: $0)! })
        return OnnxTensor(shape: permuted.shape, storage: wrap(permuted.values))
    }
}

/// The element types Einsum multiplies: FP32 and FP64 through BLAS, integers wrapping.
protocol EinsumElement: AdditiveArithmetic {
    static func plus(_ a: Self, _ b: Self) -> Self
    /// `batch` products of row-major [m×k] and [k×n] matrices.
    static func batchedProduct(_ a: [Self], _ b: [Self], batch: Int, m: Int, k: Int, n: Int) -> [Self]
}

extension EinsumElement where Self: BLASScalar {
    static func plus(_ a: Self, _ b: Self) -> Self { a + b }
    static func batchedProduct(_ a: [Self], _ b: [Self], batch: Int, m: Int, k: Int, n: Int) -> [Self] {
        var c = [Self](repeating: .zero, count: batch * m * n)
        guard k > 0 else { return c }
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    for i in 0..<batch {
                        Self.gemm(
                            pa.baseAddress! + i * m * k, pb.baseAddress! + i * k * n, pc.baseAddress! + i * m * n, m: m,
                            n: n, k: k)
                    }
                }
            }
        }
        return c
    }
}

extension Float: EinsumElement {}
extension Double: EinsumElement {}

extension EinsumElement where Self: FixedWidthInteger {
    static func plus(_ a: Self, _ b: Self) -> Self { a &+ b }
    static func batchedProduct(_ a: [Self], _ b: [Self], batch: Int, m: Int, k: Int, n: Int) -> [Self] {
        var c = [Self](repeating: .zero, count: batch * m * n)
        for i in 0..<batch {
            for r in 0..<m {
                for j in 0..<k {
                    let x = a[(i * m + r) * k + j]
                    if x == 0 { continue }
                    let row = (i * k + j) * n
                    let out = (i * m + r) * n
                    for col in 0..<n { c[out + col] &+= x &* b[row + col] }
                }
            }
        }
        return c
    }
}

extension Int32: EinsumElement {}
extension Int64: EinsumElement {}

/// An array with a label per dimension.
struct LabelledArray<T: EinsumElement> {
    var values: [T]
    var labels: [Int]
    var shape: [Int]

    /// Takes the diagonal of repeated labels and drops size-1 dimensions that broadcast.
    func prepared(_ sizes: [Int: Int]) throws -> LabelledArray {
        var result = self
        if Set(self.labels).count != self.labels.count {
            var unique: [Int] = []
            for label in self.labels where !unique.contains(label) { unique.append(label) }
            var uniqueShape: [Int] = []
            for label in unique {
                let axes = self.labels.indices.filter { self.labels[$0] == label }
                let extent = self.shape[axes[0]]
                guard axes.allSatisfy({ self.shape[$0] == extent }) else {
                    throw OnnxError("Einsum: a repeated label has different sizes in \(self.shape)")
                }
                uniqueShape.append(extent)
            }
            var strides = [Int](repeating: 0, count: unique.count)
            var step = 1
            for axis in stride(from: self.labels.count - 1, through: 0, by: -1) {
                strides[unique.firstIndex(of: self.labels[axis])!] += step
                step *= self.shape[axis]
            }
            var gathered: [T] = []
            gathered.reserveCapacity(uniqueShape.reduce(1, *))
            forEachIndex(uniqueShape) { index in
                var flat = 0
                for (i, s) in zip(index, strides) { flat += i * s }
                gathered.append(self.values[flat])
            }
            result = LabelledArray(values: gathered, labels: unique, shape: uniqueShape)
        }
        // A size-1 dimension whose label is larger elsewhere broadcasts: it is dropped here.
        let keep = result.labels.indices.filter { result.shape[$0] != 1 || sizes[result.labels[$0]] == 1 }
        if keep.count != result.labels.count {
            result.labels = keep.map { result.labels[$0] }
            result.shape = keep.map { result.shape[$0] }
        }
        return result
    }

    func permuted(_ perm: [Int]) -> LabelledArray {
        if perm == Array(perm.indices) { return self }
        let (values, shape) = transpose(self.values, shape: self.shape, perm: perm)
        return LabelledArray(values: values, labels: perm.map { self.labels[$0] }, shape: shape)
    }

    /// Sums the dimensions whose labels `keeping` does not hold.
    func summed(keeping: Set<Int>) -> LabelledArray {
        let kept = self.labels.indices.filter { keeping.contains(self.labels[$0]) }
        guard kept.count != self.labels.count else { return self }
        let dropped = self.labels.indices.filter { !keeping.contains(self.labels[$0]) }
        let moved = self.permuted(kept + dropped)
        let inner = dropped.map { self.shape[$0] }.reduce(1, *)
        let outer = kept.map { self.shape[$0] }.reduce(1, *)
        var sums = [T](repeating: .zero, count: outer)
        moved.values.withUnsafeBufferPointer { v in
            for o in 0..<outer {
                var s = T.zero
                for i in 0..<inner { s = T.plus(s, v[o * inner + i]) }
                sums[o] = s
            }
        }
        return LabelledArray(values: sums, labels: kept.map { self.labels[$0] }, shape: kept.map { self.shape[$0] })
    }

    /// The product with `other`, summed over the labels both have and `keeping` does not.
    func multiplied(by other: LabelledArray, keeping: Set<Int>) throws -> LabelledArray {
        let shared = self.labels.filter { other.labels.contains($0) }
        let batch = shared.filter { keeping.contains($0) }
        let summed = shared.filter { !keeping.contains($0) }
        let left = self.labels.filter { !other.labels.contains($0) }
        let right = other.labels.filter { !self.labels.contains($0) }
        func size(_ labels: [Int], in array: LabelledArray) -> [Int] {
            labels.map { array.shape[array.labels.firstIndex(of: $0)!] }
        }
        let a = self.permuted((batch + left + summed).map { self.labels.firstIndex(of: $0)! })
        let b = other.permuted((batch + summed + right).map { other.labels.firstIndex(of: $0)! })
        let batchShape = size(batch, in: self)
        let leftShape = size(left, in: self)
        let rightShape = size(right, in: other)
        let shape = batchShape + leftShape + rightShape
        _ = try checkedCount(shape, "Einsum intermediate")
        let values = T.batchedProduct(
            a.values, b.values, batch: batchShape.reduce(1, *), m: leftShape.reduce(1, *),
            k: size(summed, in: self).reduce(1, *), n: rightShape.reduce(1, *))
        return LabelledArray(values: values, labels: batch + left + right, shape: shape)
    }
}
