import InferWireCore
import Synchronization

/// Picks one call in N with a relaxed counter, for sampling on the request path: no random
/// draw, no lock.
public final class OneInN: Sendable {
    /// N: the rate's inverse, rounded, at least 1.
    public let interval: UInt64
    private let counter = Atomic<UInt64>(0)

    /// - Parameter rate: the share picked, 0 to 1 (0 picks one call in a billion).
    public init(rate: Double) {
        self.interval = UInt64(max(1, min(1e9, (1 / max(rate, 1e-9)).rounded())))
    }

    /// Whether this call is picked; the first one is.
    public func next() -> Bool {
        self.counter.wrappingAdd(1, ordering: .relaxed).oldValue % self.interval == 0
    }
}

/// Answers counted by status code: an array slot per known code, a dictionary for codes a
/// newer peer may add.
struct StatusCounts: Sendable {
    private var known = [UInt64](repeating: 0, count: 17)
    private var others: [Int: UInt64] = [:]

    mutating func add(_ code: InferWireError.Code) {
        if code.rawValue >= 0 && code.rawValue < self.known.count {
            self.known[code.rawValue] += 1
        } else {
            self.others[code.rawValue, default: 0] += 1
        }
    }

    /// The codes seen and their counts.
    var byCode: [InferWireError.Code: UInt64] {
        var result: [InferWireError.Code: UInt64] = [:]
        for (code, count) in self.known.enumerated() where count > 0 {
            result[InferWireError.Code(rawValue: code)] = count
        }
        for (code, count) in self.others { result[InferWireError.Code(rawValue: code)] = count }
        return result
    }
}
