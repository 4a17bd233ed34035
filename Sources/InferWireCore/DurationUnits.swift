/// Conversions from `Duration` to the plain numbers that wire fields, histograms and
/// rates use. Saturating: a duration beyond the range gives the range's end.
extension Duration {
    /// Whole nanoseconds.
    public var inNanoseconds: Int64 {
        let (seconds, attoseconds) = self.components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflow2 ? (seconds < 0 ? .min : .max) : sum
    }

    /// Whole microseconds.
    public var inMicroseconds: Int64 { self.inNanoseconds / 1000 }

    /// Seconds as a floating-point number.
    public var inSeconds: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }
}
