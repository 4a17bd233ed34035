import Foundation

/// Comparisons, boolean logic, Where, IsNaN and IsInf.
enum LogicalOps {
    static func register(_ r: inout [String: KernelFactory]) {
        let comparisons: [(String, ComparisonOp)] = [
            ("Equal", .equal), ("Greater", .greater), ("GreaterOrEqual", .greaterOrEqual), ("Less", .less),
            ("LessOrEqual", .lessOrEqual),
        ]
        for (name, op) in comparisons {
            r[name] = { c in
                try c.require(inputs: 2...2)
                try c.attributes.checkAllUsed()
                return FunctionKernel { inputs in
                    [try compare(try input(inputs, 0, name), try input(inputs, 1, name), op, name: name)]
                }
            }
        }
        r["Not"] = { c in
            try c.require(inputs: 1...1)
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Not")
                guard case .bool(let v) = x.storage else { throw OnnxError("Not takes bool, got \(x.elementType)") }
                return [OnnxTensor(shape: x.shape, storage: .bool(v.map { !$0 }))]
            }
        }
        let logic: [(String, @Sendable (Bool, Bool) -> Bool)] = [
            ("And", { $0 && $1 }), ("Or", { $0 || $1 }), ("Xor", { $0 != $1 }),
        ]
        for (name, op) in logic {
            r[name] = { c in
                try c.require(inputs: 2...2)
                return FunctionKernel { inputs in
                    let a = try input(inputs, 0, name)
                    let b = try input(inputs, 1, name)
                    guard case .bool(let x) = a.storage, case .bool(let y) = b.storage else {
                        throw OnnxError("\(name) takes bool inputs, got \(a.elementType) and \(b.elementType)")
                    }
                    let (v, shape) = try broadcastBinary(x, a.shape, y, b.shape, op)
                    return [OnnxTensor(shape: shape, storage: .bool(v))]
                }
            }
        }
        r["Where"] = { c in
            try c.require(inputs: 3...3)
            return FunctionKernel { inputs in
                [
                    try select(
                        try input(inputs, 0, "Where"), try input(inputs, 1, "Where"), try input(inputs, 2, "Where"))
                ]
            }
        }
        r["IsNaN"] = { c in
            try c.require(inputs: 1...1)
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "IsNaN")
                switch x.storage {
                case .float(let v): return [OnnxTensor(shape: x.shape, storage: .bool(v.map(\.isNaN)))]
                case .double(let v): return [OnnxTensor(shape: x.shape, storage: .bool(v.map(\.isNaN)))]
                default: throw OnnxError("IsNaN takes float or double, got \(x.elementType)")
                }
            }
        }
        r["IsInf"] = { c in
            try c.require(inputs: 1...1)
            let positive = try c.attributes.int("detect_positive", default: 1) != 0
            let negative = try c.attributes.int("detect_negative", default: 1) != 0
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "IsInf")
                func test(_ d: Double) -> Bool { d.isInfinite && (d > 0 ? positive : negative) }
                switch x.storage {
                case .float(let v): return [OnnxTensor(shape: x.shape, storage: .bool(v.map { test(Double($0)) }))]
                case .double(let v): return [OnnxTensor(shape: x.shape, storage: .bool(v.map(test)))]
                default: throw OnnxError("IsInf takes float or double, got \(x.elementType)")
                }
            }
        }
    }
}

enum ComparisonOp: Sendable {
    case equal, greater, greaterOrEqual, less, lessOrEqual

    func test<T: Comparable>(_ a: T, _ b: T) -> Bool {
        switch self {
        case .equal: a == b
        case .greater: a > b
        case .greaterOrEqual: a >= b
        case .less: a < b
        case .lessOrEqual: a <= b
        }
    }
}

/// A comparison with broadcasting; bool answers. Equal also takes bool and string.
func compare(_ a: OnnxTensor, _ b: OnnxTensor, _ op: ComparisonOp, name: String) throws -> OnnxTensor {
    func run<T: Comparable>(_ x: [T], _ y: [T]) throws -> OnnxTensor {
        let (v, shape) = try broadcastBinary(x, a.shape, y, b.shape) { op.test($0, $1) }
        return OnnxTensor(shape: shape, storage: .bool(v))
    }
    switch (a.storage, b.storage) {
    case (.float(let x), .float(let y)): return try run(x, y)
    case (.double(let x), .double(let y)): return try run(x, y)
    case (.int64(let x), .int64(let y)): return try run(x, y)
    case (.int32(let x), .int32(let y)): return try run(x, y)
    case (.string(let x), .string(let y)) where op == .equal: return try run(x, y)
    case (.bool(let x), .bool(let y)) where op == .equal:
        let (v, shape) = try broadcastBinary(x, a.shape, y, b.shape) { $0 == $1 }
        return OnnxTensor(shape: shape, storage: .bool(v))
    default:
        throw OnnxError("\(name) needs two inputs of one comparable type, got \(a.elementType) and \(b.elementType)")
    }
}

/// Where(condition, x, y) with broadcasting across all three.
func select(_ condition: OnnxTensor, _ x: OnnxTensor, _ y: OnnxTensor) throws -> OnnxTensor {
    guard case .bool(let cond) = condition.storage else {
        throw OnnxError("Where's condition must be bool, got \(condition.elementType)")
    }
    let shape = try broadcastShape(try broadcastShape(condition.shape, x.shape), y.shape)
    let (c, fromX, fromY) = (
        try broadcastIndices(from: condition.shape, to: shape), try broadcastIndices(from: x.shape, to: shape),
        try broadcastIndices(from: y.shape, to: shape)
    )
    func run<T>(_ a: [T], _ b: [T]) -> [T] { c.indices.map { cond[c[$0]] ? a[fromX[$0]] : b[fromY[$0]] } }
    switch (x.storage, y.storage) {
    case (.float(let a), .float(let b)): return OnnxTensor(shape: shape, storage: .float(run(a, b)))
    case (.double(let a), .double(let b)): return OnnxTensor(shape: shape, storage: .double(run(a, b)))
    case (.int64(let a), .int64(let b)): return OnnxTensor(shape: shape, storage: .int64(run(a, b)))
    case (.int32(let a), .int32(let b)): return OnnxTensor(shape: shape, storage: .int32(run(a, b)))
    case (.bool(let a), .bool(let b)): return OnnxTensor(shape: shape, storage: .bool(run(a, b)))
    case (.string(let a), .string(let b)): return OnnxTensor(shape: shape, storage: .string(run(a, b)))
    default: throw OnnxError("Where needs x and y of one type, got \(x.elementType) and \(y.elementType)")
    }
}
