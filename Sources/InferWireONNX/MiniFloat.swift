import Foundation

/// The 8- and 4-bit float formats ONNX defines, converted as its reference (ml_dtypes) does:
/// round to nearest, ties to even; the FNUZ formats have no negative zero and one NaN; only
/// E5M2 has infinities; E2M1 always saturates; E8M0 is a bare exponent with its own rounding.
enum MiniFloat: Sendable, Hashable {
    case e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e2m1, e8m0

    /// How `saturate` and E8M0's `round_mode` shape a conversion.
    struct Rounding: Sendable, Hashable {
        /// Out-of-range values become the largest finite value instead of NaN or infinity.
        var saturate = true
        /// E8M0 only: "up" (ONNX's default), "down" or "nearest".
        var e8m0Mode = "up"

        static let standard = Rounding()
        /// How arithmetic results are brought back into a format (no saturation, as numpy's astype).
        static let exact = Rounding(saturate: false)
    }

    var bits: Int { self == .e2m1 ? 4 : 8 }

    /// The value of every code.
    var values: [Float] {
        switch self {
        case .e4m3fn: Self.e4m3fnValues
        case .e4m3fnuz: Self.e4m3fnuzValues
        case .e5m2: Self.e5m2Values
        case .e5m2fnuz: Self.e5m2fnuzValues
        case .e2m1: Self.e2m1Values
        case .e8m0: Self.e8m0Values
        }
    }

    func decode(_ code: UInt8) -> Float {
        let table = self.values
        return table[Int(code) & (table.count - 1)]
    }

    /// The code nearest `x`.
    func encode(_ x: Float, _ rounding: Rounding = .standard) -> UInt8 {
        if self == .e8m0 { return Self.encodeE8M0(x, rounding) }
        let signBit = UInt8(1) << (self.bits - 1)
        let nan: UInt8
        switch self {
        case .e4m3fn: nan = 0x7F
        case .e5m2: nan = 0x7E
        case .e2m1: nan = 0x08  // no NaN: ml_dtypes gives negative zero
        default: nan = 0x80
        }
        if x.isNaN { return nan }
        let negative = x.sign == .minus
        let magnitude = abs(x)
        let positives = self.positiveFinite
        let largest = positives.count - 1
        let sign: UInt8 = negative ? signBit : 0
        func overflow() -> UInt8 {
            if rounding.saturate || self == .e2m1 { return sign | UInt8(largest) }
            return self == .e5m2 ? sign | 0x7C : nan
        }
        if magnitude.isInfinite {
            if self == .e5m2 && !rounding.saturate { return sign | 0x7C }
            return overflow()
        }
        // The first code whose value is not below the magnitude.
        var low = 0
        var high = positives.count
        while low < high {
            let middle = (low + high) / 2
            if positives[middle] < magnitude { low = middle + 1 } else { high = middle }
        }
        let code: Int
        if low == 0 {
            code = 0
        } else if low > largest {
            // Past the largest value: the next code up would be one step of the top binade further.
            let step = positives[largest] - positives[largest - 1]
            let midpoint = positives[largest] + step / 2
            if magnitude < midpoint || (magnitude == midpoint && largest % 2 == 0) {
                code = largest
            } else {
                return overflow()
            }
        } else {
            let below = positives[low - 1]
            let above = positives[low]
            let midpoint = below + (above - below) / 2
            if magnitude < midpoint {
                code = low - 1
            } else if magnitude > midpoint {
                code = low
            } else {
                code = (low - 1) % 2 == 0 ? low - 1 : low
            }
        }
        // The FNUZ formats have no negative zero.
        if code == 0 && (self == .e4m3fnuz || self == .e5m2fnuz) { return 0 }
        return sign | UInt8(code)
    }

    /// Values of the non-negative finite codes, ascending with the code.
    private var positiveFinite: [Float] {
        switch self {
        case .e4m3fn: Self.e4m3fnPositive
        case .e4m3fnuz: Self.e4m3fnuzPositive
        case .e5m2: Self.e5m2Positive
        case .e5m2fnuz: Self.e5m2fnuzPositive
        case .e2m1: Self.e2m1Positive
        case .e8m0: []
        }
    }

    private static func table(exponentBits: Int, mantissaBits: Int, bias: Int, kind: MiniFloat) -> [Float] {
        let count = 1 << (1 + exponentBits + mantissaBits)
        return (0..<count).map { code in
            let sign: Float = code >> (exponentBits + mantissaBits) & 1 == 1 ? -1 : 1
            let exponent = code >> mantissaBits & ((1 << exponentBits) - 1)
            let mantissa = code & ((1 << mantissaBits) - 1)
            let magnitudeBits = code & (count / 2 - 1)
            switch kind {
            case .e4m3fn where magnitudeBits == 0x7F: return .nan
            case .e5m2 where exponent == 0x1F: return mantissa == 0 ? sign * .infinity : .nan
            case .e4m3fnuz, .e5m2fnuz: if code == 0x80 { return .nan }
            default: break
            }
            let fraction = Float(mantissa) / Float(1 << mantissaBits)
            let value =
                exponent == 0
                ? fraction * Float(sign: .plus, exponent: 1 - bias, significand: 1)
                : (1 + fraction) * Float(sign: .plus, exponent: exponent - bias, significand: 1)
            return sign * value
        }
    }

    private static let e4m3fnValues = table(exponentBits: 4, mantissaBits: 3, bias: 7, kind: .e4m3fn)
    private static let e4m3fnuzValues = table(exponentBits: 4, mantissaBits: 3, bias: 8, kind: .e4m3fnuz)
    private static let e5m2Values = table(exponentBits: 5, mantissaBits: 2, bias: 15, kind: .e5m2)
    private static let e5m2fnuzValues = table(exponentBits: 5, mantissaBits: 2, bias: 16, kind: .e5m2fnuz)
    private static let e2m1Values = table(exponentBits: 2, mantissaBits: 1, bias: 1, kind: .e2m1)
    private static let e8m0Values: [Float] = (0..<256).map { code in
        code == 0xFF ? .nan : Float(sign: .plus, exponent: code - 127, significand: 1)
    }

    private static func positives(_ values: [Float]) -> [Float] {
        Array(values[0..<(values.count / 2)].prefix { $0.isFinite })
    }
    private static let e4m3fnPositive = positives(e4m3fnValues)
    private static let e4m3fnuzPositive = positives(e4m3fnuzValues)
    private static let e5m2Positive = positives(e5m2Values)
    private static let e5m2fnuzPositive = positives(e5m2fnuzValues)
    private static let e2m1Positive = positives(e2m1Values)

    /// E8M0 keeps a float32's exponent, rounded by its mantissa as `rounding` says (the sign
    /// is dropped; NaN and infinity become the NaN code).
    private static func encodeE8M0(_ x: Float, _ rounding: Rounding) -> UInt8 {
        let bits = x.bitPattern
        let exponent = Int(bits >> 23 & 0xFF)
        if exponent == 0xFF { return 0xFF }
        let roundUp: Bool
        switch rounding.e8m0Mode {
        case "nearest":
            let guardBit = bits & 0x40_0000 != 0
            let roundBit = bits & 0x20_0000 != 0
            let sticky = bits & 0x1F_FFFF != 0
            roundUp = guardBit && (roundBit || sticky || exponent > 0)
        case "down": roundUp = false
        default: roundUp = bits & 0x7F_FFFF != 0
        }
        if roundUp && !(rounding.saturate && exponent == 0xFE) { return UInt8(exponent + 1) }
        return UInt8(exponent)
    }
}
