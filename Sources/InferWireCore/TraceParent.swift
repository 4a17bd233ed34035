/// A W3C Trace Context `traceparent` value (https://www.w3.org/TR/trace-context/):
/// `<version>-<trace id>-<parent span id>-<flags>` in lowercase hex.
public struct TraceParent: Sendable, Hashable, CustomStringConvertible {
    /// 32 hex digits, not all zero.
    public var traceID: String
    /// 16 hex digits, not all zero.
    public var parentSpanID: String
    /// The trace flags; bit 0 says the caller sampled the trace.
    public var flags: UInt8

    public var isSampled: Bool { self.flags & 1 == 1 }

    /// Parses a header value; nil when it is not a valid one. Versions after 00 are read
    /// as the recommendation says: their first four fields as version 00's, the rest ignored.
    public init?(_ value: String) {
        let fields = value.split(separator: "-", omittingEmptySubsequences: false)
        guard fields.count >= 4, fields[0].count == 2, let version = UInt8(fields[0], radix: 16), version != 0xff,
            Self.isHex(fields[0]), fields[1].count == 32, Self.isHex(fields[1]), fields[2].count == 16,
            Self.isHex(fields[2]), fields[3].count == 2, Self.isHex(fields[3]), let flags = UInt8(fields[3], radix: 16)
        else { return nil }
        // Version 00 has exactly four fields.
        guard version != 0 || fields.count == 4 else { return nil }
        guard fields[1].contains(where: { $0 != "0" }), fields[2].contains(where: { $0 != "0" }) else { return nil }
        self.traceID = String(fields[1])
        self.parentSpanID = String(fields[2])
        self.flags = flags
    }

    public init(traceID: String, parentSpanID: String, flags: UInt8) {
        self.traceID = traceID
        self.parentSpanID = parentSpanID
        self.flags = flags
    }

    /// The header value, version 00.
    public var description: String {
        let hexFlags = String(self.flags, radix: 16)
        return "00-\(self.traceID)-\(self.parentSpanID)-\(hexFlags.count == 1 ? "0" + hexFlags : hexFlags)"
    }

    private static func isHex(_ text: Substring) -> Bool {
        text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}
