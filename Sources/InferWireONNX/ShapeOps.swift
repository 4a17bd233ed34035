/// A transformation of an element array that works for any element type.
protocol ArrayTransform {
    func apply<T>(_ values: [T]) throws -> [T]
}

extension OnnxTensor.Storage {
    func transformed(_ t: some ArrayTransform) throws -> OnnxTensor.Storage {
        switch self {
        case .float(let v): .float(try t.apply(v))
        case .double(let v): .double(try t.apply(v))
        case .int64(let v): .int64(try t.apply(v))
        case .int32(let v): .int32(try t.apply(v))
        case .bool(let v): .bool(try t.apply(v))
        case .string(let v): .string(try t.apply(v))
        }
    }
}

/// Picks elements by flat source index.
struct GatherIndices: ArrayTransform {
    let indices: [Int]
    func apply<T>(_ values: [T]) throws -> [T] {
        try values.withUnsafeBufferPointer { src in
            try self.indices.map { i in
                guard i >= 0, i < src.count else { throw OnnxError("index out of range") }
                return src[i]
            }
        }
    }
}

struct Permute: ArrayTransform {
    let shape: [Int]
    let perm: [Int]
    func apply<T>(_ values: [T]) throws -> [T] { transpose(values, shape: self.shape, perm: self.perm).0 }
}

/// Concatenates tensors of one type along `axis`.
func concatenate(_ parts: [OnnxTensor], axis: Int) throws -> OnnxTensor {
    guard let first = parts.first else { throw OnnxError("Concat needs at least one input") }
    let rank = first.rank
    let a = try normalizeAxis(axis, rank: rank)
    for p in parts {
        guard p.rank == rank, p.elementType == first.elementType else {
            throw OnnxError(
                "Concat inputs must share rank and type: \(first.shape) \(first.elementType) vs \(p.shape) \(p.elementType)"
            )
        }
        for d in 0..<rank where d != a && p.shape[d] != first.shape[d] {
            throw OnnxError("Concat inputs differ outside axis \(axis): \(first.shape) vs \(p.shape)")
        }
    }
    var shape = first.shape
    shape[a] = parts.reduce(0) { $0 + $1.shape[a] }
    _ = try checkedCount(shape, "Concat output")
    let outer = first.shape[..<a].reduce(1, *)
    let blocks = parts.map { $0.shape[a...].reduce(1, *) }
    func join<T>(_ arrays: [[T]]) -> [T] {
        var out: [T] = []
        out.reserveCapacity(shape.reduce(1, *))
        for o in 0..<outer {
            for (array, block) in zip(arrays, blocks) { out.append(contentsOf: array[(o * block)..<((o + 1) * block)]) }
        }
        return out
    }
    func all<T>(_ extract: (OnnxTensor) -> [T]?) -> [[T]] { parts.map { extract($0)! } }
    let storage: OnnxTensor.Storage
    switch first.storage {
    case .float: storage = .float(join(all { if case .float(let v) = $0.storage { v } else { nil } }))
    case .double: storage = .double(join(all { if case .double(let v) = $0.storage { v } else { nil } }))
    case .int64: storage = .int64(join(all { if case .int64(let v) = $0.storage { v } else { nil } }))
    case .int32: storage = .int32(join(all { if case .int32(let v) = $0.storage { v } else { nil } }))
    case .bool: storage = .bool(join(all { if case .bool(let v) = $0.storage { v } else { nil } }))
    case .string: storage = .string(join(all { if case .string(let v) = $0.storage { v } else { nil } }))
    }
    return OnnxTensor(shape: shape, storage: storage)
}

/// ONNX Reshape's target shape: 0 copies the input dimension (unless allowzero), -1 is inferred.
func reshapeTarget(_ requested: [Int], input: [Int], allowZero: Bool) throws -> [Int] {
    var shape = requested
    var inferred: Int?
    for (i, d) in requested.enumerated() {
        if d == 0 && !allowZero {
            guard i < input.count else { throw OnnxError("Reshape: 0 at position \(i) has no input dimension to copy") }
            shape[i] = input[i]
        } else if d == -1 {
            guard inferred == nil else { throw OnnxError("Reshape: more than one -1 in \(requested)") }
            inferred = i
        } else if d < -1 {
            throw OnnxError("Reshape: invalid dimension \(d)")
        }
    }
    let total = try checkedCount(input, "Reshape input")
    if let i = inferred {
        var known = shape
        known[i] = 1
        let knownCount = try checkedCount(known, "Reshape target")
        guard knownCount > 0, total % knownCount == 0 else {
            throw OnnxError("Reshape: cannot reshape \(input) to \(requested)")
        }
        shape[i] = total / knownCount
    }
    guard try checkedCount(shape, "Reshape target") == total else {
        throw OnnxError("Reshape: cannot reshape \(input) (\(total) elements) to \(requested)")
    }
    return shape
}

enum ShapeOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["Reshape"] = { c in
            try c.require(inputs: 1...2)
            let allowZero = try c.attributes.int("allowzero", default: 0) != 0
            let attrShape = try c.attributes.ints("shape")  // opset < 5
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Reshape")
                let requested = try attrShape ?? (try input(inputs, 1, "Reshape")).integers("Reshape shape")
                var y = x
                y.shape = try reshapeTarget(requested, input: x.shape, allowZero: allowZero)
                return [y]
            }
        }
        r["Flatten"] = { c in
            try c.require(inputs: 1...1)
            let axis = try c.attributes.int("axis", default: 1)
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                var x = try input(inputs, 0, "Flatten")
                let a = axis < 0 ? axis + x.rank : axis
                guard a >= 0, a <= x.rank else {
                    throw OnnxError("Flatten: axis \(axis) out of range for rank \(x.rank)")
                }
                x.shape = [x.shape[..<a].reduce(1, *), x.shape[a...].reduce(1, *)]
                return [x]
            }
        }
        r["Squeeze"] = { c in
            try c.require(inputs: 1...2)
            let attrAxes = try c.attributes.ints("axes")
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                var x = try input(inputs, 0, "Squeeze")
                let given = try attrAxes ?? (inputs.count > 1 ? try inputs[1]?.integers("Squeeze axes") : nil)
                if let given {
                    let axes = Set(try given.map { a throws(OnnxError) in try normalizeAxis(a, rank: x.rank) })
                    for a in axes where x.shape[a] != 1 {
                        throw OnnxError("Squeeze: dimension \(a) of \(x.shape) is not 1")
                    }
                    x.shape = x.shape.enumerated().filter { !axes.contains($0.offset) }.map(\.element)
                } else {
                    x.shape = x.shape.filter { $0 != 1 }
                }
                return [x]
            }
        }
        r["Unsqueeze"] = { c in
            try c.require(inputs: 1...2)
            let attrAxes = try c.attributes.ints("axes")
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                var x = try input(inputs, 0, "Unsqueeze")
                let given = try attrAxes ?? (try input(inputs, 1, "Unsqueeze")).integers("Unsqueeze axes")
                let rank = x.rank + given.count
                let axes = Set(try given.map { a throws(OnnxError) in try normalizeAxis(a, rank: rank) })
                guard axes.count == given.count else { throw OnnxError("Unsqueeze: repeated axis in \(given)") }
                var shape: [Int] = []
                var source = x.shape.makeIterator()
                for d in 0..<rank { shape.append(axes.contains(d) ? 1 : source.next()!) }
                x.shape = shape
                return [x]
            }
        }
        r["Transpose"] = { c in
            try c.require(inputs: 1...1)
            let perm = try c.attributes.ints("perm")
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Transpose")
                let p = perm ?? Array((0..<x.rank).reversed())
                guard p.sorted() == Array(0..<x.rank) else {
                    throw OnnxError("Transpose: perm \(p) does not fit rank \(x.rank)")
                }
                return [
                    OnnxTensor(
                        shape: p.map { x.shape[$0] },
                        storage: try x.storage.transformed(Permute(shape: x.shape, perm: p)))
                ]
            }
        }
        r["Concat"] = { c in
            guard c.inputCount >= 1 else { throw c.error("needs at least one input") }
            guard let axis = try c.attributes.int("axis") else { throw c.error("attribute 'axis' is required") }
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                [try concatenate(try inputs.indices.map { try input(inputs, $0, "Concat") }, axis: axis)]
            }
        }
        r["Gather"] = { c in
            try c.require(inputs: 2...2)
            let axis = try c.attributes.int("axis", default: 0)
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let data = try input(inputs, 0, "Gather")
                let indexTensor = try input(inputs, 1, "Gather")
                let a = try normalizeAxis(axis, rank: data.rank)
                let dim = data.shape[a]
                let indices = try indexTensor.integers("Gather indices").map { i in
                    let j = i < 0 ? i + dim : i
                    guard j >= 0, j < dim else {
                        throw OnnxError("Gather: index \(i) out of range for dimension of size \(dim)")
                    }
                    return j
                }
                let shapeOut = Array(data.shape[..<a]) + indexTensor.shape + Array(data.shape[(a + 1)...])
                _ = try checkedCount(shapeOut, "Gather output")
                let outer = data.shape[..<a].reduce(1, *)
                let inner = data.shape[(a + 1)...].reduce(1, *)
                var flat: [Int] = []
                flat.reserveCapacity(outer * indices.count * inner)
                for o in 0..<outer {
                    for j in indices {
                        let base = (o * dim + j) * inner
                        for k in 0..<inner { flat.append(base + k) }
                    }
                }
                let shape = Array(data.shape[..<a]) + indexTensor.shape + Array(data.shape[(a + 1)...])
                return [OnnxTensor(shape: shape, storage: try data.storage.transformed(GatherIndices(indices: flat)))]
            }
        }
        r["Slice"] = { c in
            try c.require(inputs: 1...5)
            // Before opset 10, starts/ends/axes are attributes.
            let attrStarts = try c.attributes.ints("starts")
            let attrEnds = try c.attributes.ints("ends")
            let attrAxes = try c.attributes.ints("axes")
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let data = try input(inputs, 0, "Slice")
                func optional(_ i: Int) throws -> [Int]? {
                    i < inputs.count ? try inputs[i]?.integers("Slice input \(i)") : nil
                }
                let starts = try attrStarts ?? (try input(inputs, 1, "Slice")).integers("Slice starts")
                let ends = try attrEnds ?? (try input(inputs, 2, "Slice")).integers("Slice ends")
                let axes = try attrAxes ?? optional(3) ?? Array(0..<starts.count)
                let steps = try optional(4) ?? Array(repeating: 1, count: starts.count)
                guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count else {
                    throw OnnxError("Slice: starts, ends, axes and steps must have one length")
                }
                var begin = [Int](repeating: 0, count: data.rank)
                var step = [Int](repeating: 1, count: data.rank)
                var shape = data.shape
                for (k, axis) in axes.enumerated() {
                    let a = try normalizeAxis(axis, rank: data.rank)
                    let n = data.shape[a]
                    // A step beyond the dimension behaves like one that just spans it.
                    let s = min(max(steps[k], -(n + 1)), n + 1)
                    guard s != 0 else { throw OnnxError("Slice: step 0") }
                    func clampIndex(_ v: Int, low: Int, high: Int) -> Int {
                        // Starts and ends may be any Int64: clamp before adding n.
                        let w = min(max(v, -n - 1), n + 1)
                        return min(max(w < 0 ? w + n : w, low), high)
                    }
                    let start =
                        s > 0 ? clampIndex(starts[k], low: 0, high: n) : clampIndex(starts[k], low: 0, high: n - 1)
                    let end = s > 0 ? clampIndex(ends[k], low: 0, high: n) : clampIndex(ends[k], low: -1, high: n - 1)
                    begin[a] = start
                    step[a] = s
                    shape[a] = s > 0 ? max(0, (end - start + s - 1) / s) : max(0, (start - end - s - 1) / -s)
                }
                var strides = [Int](repeating: 1, count: data.rank)
                for i in stride(from: data.rank - 2, through: 0, by: -1) {
                    strides[i] = strides[i + 1] * data.shape[i + 1]
                }
                let total = shape.reduce(1, *)
                var flat: [Int] = []
                flat.reserveCapacity(total)
                if total > 0 {
                    var index = [Int](repeating: 0, count: data.rank)
                    for _ in 0..<total {
                        var offset = 0
                        for d in 0..<data.rank { offset += (begin[d] + index[d] * step[d]) * strides[d] }
                        flat.append(offset)
                        var d = data.rank - 1
                        while d >= 0 {
                            index[d] += 1
                            if index[d] < shape[d] { break }
                            index[d] = 0
                            d -= 1
                        }
                    }
                }
                return [OnnxTensor(shape: shape, storage: try data.storage.transformed(GatherIndices(indices: flat)))]
            }
        }
        r["Shape"] = { c in
            try c.require(inputs: 1...1)
            let start = try c.attributes.int("start", default: 0)
            let end = try c.attributes.int("end")
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Shape")
                let r = x.rank
                let s = min(max(start < 0 ? start + r : start, 0), r)
                let e = min(max((end ?? r) < 0 ? (end ?? r) + r : (end ?? r), 0), r)
                let dims = s < e ? x.shape[s..<e].map { Int64($0) } : []
                return [OnnxTensor(shape: [dims.count], int64s: dims)]
            }
        }
        r["Constant"] = { c in
            try c.require(inputs: 0...0)
            let value: OnnxTensor
            if let t = try c.attributes.tensor("value") {
                value = t
            } else if let f = try c.attributes.float("value_float") {
                value = OnnxTensor(shape: [], floats: [f])
            } else if let fs = try c.attributes.floats("value_floats") {
                value = OnnxTensor(shape: [fs.count], floats: fs)
            } else if let i = try c.attributes.int("value_int") {
                value = OnnxTensor(shape: [], int64s: [Int64(i)])
            } else if let ints = try c.attributes.int64s("value_ints") {
                value = OnnxTensor(shape: [ints.count], int64s: ints)
            } else if let s = try c.attributes.string("value_string") {
                value = OnnxTensor(shape: [], storage: .string([s]))
            } else if let ss = try c.attributes.strings("value_strings") {
                value = OnnxTensor(shape: [ss.count], storage: .string(ss))
            } else {
                throw c.error("has no supported value attribute")
            }
            try c.attributes.checkAllUsed()
            return FunctionKernel { _ in [value] }
        }
    }
}
