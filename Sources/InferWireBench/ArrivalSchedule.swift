import Foundation

/// When each request of an open-loop run is due: evenly spaced, or with exponential gaps
/// (Poisson arrivals) from a seeded generator so runs are repeatable.
public struct ArrivalSchedule: Sendable {
    public var rate: Double
    public var poisson: Bool
    private var state: UInt64

    public init(rate: Double, poisson: Bool, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) {
        self.rate = rate
        self.poisson = poisson
        self.state = seed == 0 ? 1 : seed
    }

    /// Seconds from the previous arrival to the next.
    public mutating func nextGap() -> Double {
        guard self.poisson else { return 1 / self.rate }
        // xorshift64*: a uniform draw in (0, 1], then the exponential's inverse CDF.
        self.state ^= self.state >> 12
        self.state ^= self.state << 25
        self.state ^= self.state >> 27
        let bits = (self.state &* 0x2545_F491_4F6C_DD1D) >> 11
        let uniform = (Double(bits) + 1) / Double(1 << 53)
        return -log(uniform) / self.rate
    }
}
