import Foundation

/// A key of a lookup table: a string, an integer, or a floating-point number by its value's
/// bits — every NaN one key (as onnxruntime's LabelEncoder-4 hashes them), −0 equal to 0.
enum LookupKey: Hashable, Sendable {
    case string(String)
    case integer(Int64)
    case real(UInt64)

    static func number(_ value: Double) -> LookupKey {
        if value.isNaN { return .real(Double.nan.bitPattern) }
        return .real(value == 0 ? 0 : value.bitPattern)
    }

    /// The keys of a tensor's elements (of its storage: a narrow type's wide values).
    static func keys(_ t: OnnxTensor) -> [LookupKey] {
        switch t.storage {
        case .string(let v): v.map { .string($0) }
        case .int64(let v): v.map { .integer($0) }
        case .int32(let v): v.map { .integer(Int64($0)) }
        case .float(let v): v.map { .number(Double($0)) }
        case .double(let v): v.map { .number($0) }
        case .bool(let v): v.map { .integer($0 ? 1 : 0) }
        }
    }
}

extension OnnxTensor.Storage {
    /// These elements followed by `other`'s, when both are of one type.
    fileprivate func appending(_ other: Self) -> Self? {
        switch (self, other) {
        case (.float(let a), .float(let b)): .float(a + b)
        case (.double(let a), .double(let b)): .double(a + b)
        case (.int64(let a), .int64(let b)): .int64(a + b)
        case (.int32(let a), .int32(let b)): .int32(a + b)
        case (.bool(let a), .bool(let b)): .bool(a + b)
        case (.string(let a), .string(let b)): .string(a + b)
        default: nil
        }
    }
}

/// A map from keys of one element type to values of another, with a default for every
/// other key: LabelEncoder and CategoryMapper.
struct LookupTable: Sendable {
    enum Duplicates { case firstWins, lastWins }

    let keyType: ElementType
    let index: [LookupKey: Int]
    /// The values, then the default: a key not in `index` takes the last element.
    let table: OnnxTensor

    /// - Parameters:
    ///   - keys, values: 1-D (or any shape: their elements are taken in order), equally many.
    ///   - fallback: one element of the values' type.
    init(keys: OnnxTensor, values: OnnxTensor, default fallback: OnnxTensor, duplicates: Duplicates) throws(OnnxError) {
        guard keys.count == values.count else {
            throw OnnxError("\(keys.count) keys but \(values.count) values")
        }
        guard fallback.count == 1, fallback.elementType == values.elementType,
            let table = values.storage.appending(fallback.storage)
        else {
            throw OnnxError(
                "the default (\(fallback.elementType), \(fallback.count) elements) is not one value of the values' type (\(values.elementType))"
            )
        }
        var index: [LookupKey: Int] = [:]
        for (i, key) in LookupKey.keys(keys).enumerated() where duplicates == .lastWins || index[key] == nil {
            index[key] = i
        }
        self.keyType = keys.elementType
        self.index = index
        self.table = OnnxTensor(shape: [values.count + 1], storage: table, narrow: values.narrow)
    }

    func map(_ x: OnnxTensor, op: String) throws -> OnnxTensor {
        guard x.elementType == self.keyType else {
            throw OnnxError("\(op): X is \(x.elementType), the keys are \(self.keyType)")
        }
        let fallback = self.table.count - 1
        let indices = LookupKey.keys(x).map { self.index[$0] ?? fallback }
        return OnnxTensor(
            shape: x.shape, storage: try self.table.storage.transformed(GatherIndices(indices: indices)),
            narrow: self.table.narrow)
    }
}

/// One value of `type` as a one-element tensor, from an integer attribute.
private func integerScalar(_ value: Int64, _ type: ElementType) -> OnnxTensor? {
    switch type {
    case .int64: OnnxTensor(shape: [1], int64s: [value])
    case .int32: OnnxTensor(shape: [1], storage: .int32([Int32(truncatingIfNeeded: value)]))
    case .int8, .uint8, .int16, .uint16:
        OnnxTensor(shape: [1], storage: type.narrowed(.int32([Int32(truncatingIfNeeded: value)])), narrow: type)
    case .uint32: OnnxTensor(shape: [1], storage: .int64([Int64(UInt32(truncatingIfNeeded: value))]), narrow: type)
    default: nil
    }
}

/// Picks the one attribute of several that a node gives (`keys_strings`, `keys_int64s`, …).
private func oneOf(_ found: [(String, OnnxTensor?)], _ what: String, _ c: NodeContext) throws -> OnnxTensor {
    let given = found.filter { $0.1 != nil }
    guard given.count == 1, let tensor = given[0].1 else {
        throw c.error(
            given.isEmpty
                ? "needs \(what): one of \(found.map(\.0).joined(separator: ", "))"
                : "gives \(what) twice (\(given.map(\.0).joined(separator: " and ")))")
    }
    return tensor
}

/// The string ↔ integer maps of LabelEncoder-1 and CategoryMapper: X's type (string or
/// int64) picks the direction.
private func stringIntegerKernel(
    op: String, strings: [String], integers: [Int64], defaultString: String, defaultInteger: Int64
) throws -> any Kernel {
    let stringTensor = OnnxTensor(shape: [strings.count], storage: .string(strings))
    let integerTensor = OnnxTensor(shape: [integers.count], int64s: integers)
    // Both directions keep the last of duplicate keys, as onnxruntime's map assignments do.
    let toInteger = try LookupTable(
        keys: stringTensor, values: integerTensor, default: OnnxTensor(shape: [1], int64s: [defaultInteger]),
        duplicates: .lastWins)
    let toString = try LookupTable(
        keys: integerTensor, values: stringTensor, default: OnnxTensor(shape: [1], storage: .string([defaultString])),
        duplicates: .lastWins)
    return FunctionKernel { inputs in
        let x = try input(inputs, 0, op)
        switch x.elementType {
        case .string: return [try toInteger.map(x, op: op)]
        case .int64: return [try toString.map(x, op: op)]
        default: throw OnnxError("\(op) takes string or int64, got \(x.elementType)")
        }
    }
}

/// X's elements as FP32 (any numeric storage), for FeatureVectorizer.
private func floatValues(_ x: OnnxTensor, _ op: String) throws -> [Float] {
    switch x.storage {
    case .float(let v): return v
    case .double(let v): return v.map { Float($0) }
    case .int64(let v): return v.map { Float($0) }
    case .int32(let v): return v.map { Float($0) }
    default: throw OnnxError("\(op) takes numeric inputs, got \(x.elementType)")
    }
}

enum MLEncodingOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["LabelEncoder"] = { c in
            try c.require(inputs: 1...1)
            if c.opset < 2 {
                // LabelEncoder-1: strings ↔ their positions in classes_strings.
                let classes = try c.attributes.strings("classes_strings") ?? []
                return try stringIntegerKernel(
                    op: "LabelEncoder", strings: classes, integers: classes.indices.map { Int64($0) },
                    defaultString: try c.attributes.string("default_string", default: "_Unused"),
                    defaultInteger: Int64(try c.attributes.int("default_int64", default: -1)))
            }
            let tensors = c.opset >= 4
            func attributeList(_ prefix: String) throws -> [(String, OnnxTensor?)] {
                let strings = try c.attributes.strings(prefix + "_strings")
                let integers = try c.attributes.int64s(prefix + "_int64s")
                let floats = try c.attributes.floats(prefix + "_floats")
                var found: [(String, OnnxTensor?)] = [
                    (prefix + "_strings", strings.map { OnnxTensor(shape: [$0.count], storage: .string($0)) }),
                    (prefix + "_int64s", integers.map { OnnxTensor(shape: [$0.count], int64s: $0) }),
                    (prefix + "_floats", floats.map { OnnxTensor(shape: [$0.count], floats: $0) }),
                ]
                if tensors { found.append(("\(prefix)_tensor", try c.attributes.tensor("\(prefix)_tensor"))) }
                return found
            }
            let keys = try oneOf(try attributeList("keys"), "keys", c)
            let values = try oneOf(try attributeList("values"), "values", c)
            let supported: [ElementType] = [.string, .int64, .int32, .int16, .float, .double]
            for (what, t) in [("keys", keys), ("values", values)] where !supported.contains(t.elementType) {
                throw c.error("\(what) of type \(t.elementType) are not supported")
            }
            // Every default_* may be given; the one of the values' type counts.
            let defaultString = try c.attributes.string("default_string", default: "_Unused")
            let defaultFloat = try c.attributes.float("default_float", default: -0.0)
            let defaultInteger = Int64(try c.attributes.int("default_int64", default: -1))
            let fallback: OnnxTensor
            if tensors, let t = try c.attributes.tensor("default_tensor") {
                fallback = t
            } else {
                switch values.elementType {
                case .string: fallback = OnnxTensor(shape: [1], storage: .string([defaultString]))
                case .float: fallback = OnnxTensor(shape: [1], floats: [defaultFloat])
                case .double: fallback = OnnxTensor(shape: [1], doubles: [Double(defaultFloat)])
                default:
                    guard let integer = integerScalar(defaultInteger, values.elementType) else {
                        throw c.error("values of type \(values.elementType) have no default")
                    }
                    fallback = integer
                }
            }
            let table: LookupTable
            do {
                // onnxruntime keeps the first of duplicate keys.
                table = try LookupTable(keys: keys, values: values, default: fallback, duplicates: .firstWins)
            } catch let error as OnnxError {
                throw c.error(error.message)
            }
            return FunctionKernel { inputs in
                [try table.map(try input(inputs, 0, "LabelEncoder"), op: "LabelEncoder")]
            }
        }

        r["CategoryMapper"] = { c in
            try c.require(inputs: 1...1)
            let strings = try c.attributes.strings("cats_strings") ?? []
            let integers = try c.attributes.int64s("cats_int64s") ?? []
            guard strings.count == integers.count else {
                throw c.error("cats_strings has \(strings.count) values, cats_int64s \(integers.count)")
            }
            return try stringIntegerKernel(
                op: "CategoryMapper", strings: strings, integers: integers,
                defaultString: try c.attributes.string("default_string", default: "_Unused"),
                defaultInteger: Int64(try c.attributes.int("default_int64", default: -1)))
        }

        r["OneHotEncoder"] = { c in
            try c.require(inputs: 1...1)
            let integers = try c.attributes.int64s("cats_int64s") ?? []
            let strings = try c.attributes.strings("cats_strings") ?? []
            let zeros = try c.attributes.int("zeros", default: 1) != 0
            guard integers.isEmpty != strings.isEmpty else {
                throw c.error("needs either cats_int64s or cats_strings (one, not empty)")
            }
            // A category outside the list fails the run: a trial run's ones may be one.
            if !zeros { c.dependsOnValues = true }
            let categories = max(integers.count, strings.count)
            var positions: [LookupKey: Int] = [:]
            // The last of duplicate categories counts, as in onnxruntime.
            for (i, v) in integers.enumerated() { positions[.integer(v)] = i }
            for (i, s) in strings.enumerated() { positions[.string(s)] = i }
            let index = positions
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "OneHotEncoder")
                let keys: [LookupKey?]
                switch x.storage {
                case .string(let v): keys = v.map { .string($0) }
                case .int64(let v): keys = v.map { .integer($0) }
                case .int32(let v): keys = v.map { .integer(Int64($0)) }
                // Floating-point values are truncated to int64, as onnxruntime casts them.
                case .float(let v): keys = v.map { Int64(exactly: $0.rounded(.towardZero)).map { .integer($0) } }
                case .double(let v): keys = v.map { Int64(exactly: $0.rounded(.towardZero)).map { .integer($0) } }
                case .bool: throw OnnxError("OneHotEncoder does not take bool")
                }
                let shape = x.shape + [categories]
                var out = [Float](repeating: 0, count: try checkedCount(shape, "OneHotEncoder's output"))
                for (i, key) in keys.enumerated() {
                    if let key, let category = index[key] {
                        out[i * categories + category] = 1
                    } else if !zeros {
                        throw OnnxError("OneHotEncoder: X holds a category that is not in the list, and zeros is 0")
                    }
                }
                return [OnnxTensor(shape: shape, floats: out)]
            }
        }

        r["Imputer"] = { c in
            try c.require(inputs: 1...1)
            let floats = try c.attributes.floats("imputed_value_floats") ?? []
            let integers = try c.attributes.int64s("imputed_value_int64s") ?? []
            let replacedFloat = try c.attributes.float("replaced_value_float", default: 0)
            let replacedInteger = Int64(try c.attributes.int("replaced_value_int64", default: 0))
            guard floats.isEmpty != integers.isEmpty else {
                throw c.error("needs either imputed_value_floats or imputed_value_int64s (one, not empty)")
            }
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Imputer")
                guard x.rank >= 1 else { throw OnnxError("Imputer takes a tensor of rank 1 or more") }
                // The features: the last dimension of [F], the second of [N, F] (onnxruntime's stride).
                let stride = x.rank == 1 ? x.shape[0] : x.shape[1]
                func imputed<T, V>(_ values: [T], _ imputes: [V], replace: (T) -> Bool, _ convert: (V) -> T) throws
                    -> [T]
                {
                    guard !imputes.isEmpty else {
                        throw OnnxError(
                            "Imputer: X is \(x.elementType) but the imputed values are \(floats.isEmpty ? "int64s" : "floats")"
                        )
                    }
                    guard imputes.count == 1 || imputes.count == stride else {
                        throw OnnxError("Imputer: \(imputes.count) imputed values for \(stride) features")
                    }
                    let single = imputes.count == 1
                    return values.enumerated().map { i, v in
                        replace(v) ? convert(imputes[single ? 0 : i % stride]) : v
                    }
                }
                let storage: OnnxTensor.Storage
                switch x.storage {
                case .float(let v):
                    storage = .float(
                        try imputed(v, floats, replace: { $0 == replacedFloat || ($0.isNaN && replacedFloat.isNaN) }) {
                            $0
                        })
                case .double(let v):
                    let replaced = Double(replacedFloat)
                    storage = .double(
                        try imputed(v, floats, replace: { $0 == replaced || ($0.isNaN && replaced.isNaN) }) {
                            Double($0)
                        })
                case .int64(let v):
                    storage = .int64(try imputed(v, integers, replace: { $0 == replacedInteger }) { $0 })
                case .int32(let v):
                    storage = .int32(
                        try imputed(v, integers, replace: { Int64($0) == replacedInteger }) {
                            Int32(truncatingIfNeeded: $0)
                        })
                default: throw OnnxError("Imputer takes float, double, int64 or int32, got \(x.elementType)")
                }
                return [OnnxTensor(shape: x.shape, storage: storage)]
            }
        }

        r["FeatureVectorizer"] = { c in
            guard let dimensions = try c.attributes.ints("inputdimensions"), !dimensions.isEmpty else {
                throw c.error("inputdimensions is required")
            }
            guard dimensions.allSatisfy({ $0 >= 0 && $0 <= OnnxLimits.maxElements }) else {
                throw c.error("inputdimensions has a value below 0 or beyond \(OnnxLimits.maxElements)")
            }
            guard c.inputCount == dimensions.count else {
                throw c.error("\(c.inputCount) inputs but \(dimensions.count) inputdimensions")
            }
            try c.require(inputs: c.inputCount...c.inputCount)
            let total = dimensions.reduce(0, +)
            return FunctionKernel { inputs in
                let first = try input(inputs, 0, "FeatureVectorizer")
                guard first.rank >= 1 else { throw OnnxError("FeatureVectorizer takes tensors of rank 1 or more") }
                let rows = first.rank == 1 ? 1 : first.shape[0]
                var out = [Float](repeating: 0, count: try checkedCount([rows, total], "FeatureVectorizer's output"))
                var offset = 0
                for (i, width) in dimensions.enumerated() {
                    let x = try input(inputs, i, "FeatureVectorizer")
                    guard x.rank >= 1 else { throw OnnxError("FeatureVectorizer takes tensors of rank 1 or more") }
                    let xRows = x.rank == 1 ? 1 : x.shape[0]
                    guard xRows == rows else {
                        throw OnnxError("FeatureVectorizer: input \(i) has \(xRows) rows, input 0 has \(rows)")
                    }
                    // Each row's first `width` values; a shorter row is padded with zeros.
                    let size = x.rank == 1 ? x.shape[0] : x.shape.dropFirst().reduce(1, *)
                    let values = try floatValues(x, "FeatureVectorizer")
                    let copied = min(size, width)
                    for r in 0..<rows {
                        for j in 0..<copied { out[r * total + offset + j] = values[r * size + j] }
                    }
                    offset += width
                }
                return [OnnxTensor(shape: [rows, total], floats: out)]
            }
        }

        SVMOps.register(&r)
    }
}
