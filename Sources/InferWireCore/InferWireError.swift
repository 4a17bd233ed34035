package import InferWireProto

/// An error with a status code, the way InferWire reports every failure to a caller.
///
/// The code travels over the wire in an ERROR frame; `message` says what went wrong in
/// words a caller can act on; `cause` keeps the underlying error for logs (it is not sent).
public struct InferWireError: Error, Sendable, CustomStringConvertible {
    /// A status code, numbered as gRPC's so clients in any language map it 1:1.
    ///
    /// A struct wrapping the number rather than an enum, so a code added by a newer server
    /// is carried and printed (`CODE_17`) instead of breaking exhaustive `switch`es.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The wire number (the `StatusCode` enum of `status.proto`).
        public let rawValue: Int

        /// A code by its wire number; numbers this release does not know are kept.
        public init(rawValue: Int) { self.rawValue = rawValue }

        public static let ok = Code(rawValue: 0)
        public static let cancelled = Code(rawValue: 1)
        public static let unknown = Code(rawValue: 2)
        public static let invalidArgument = Code(rawValue: 3)
        public static let deadlineExceeded = Code(rawValue: 4)
        public static let notFound = Code(rawValue: 5)
        public static let alreadyExists = Code(rawValue: 6)
        public static let permissionDenied = Code(rawValue: 7)
        public static let resourceExhausted = Code(rawValue: 8)
        public static let failedPrecondition = Code(rawValue: 9)
        public static let aborted = Code(rawValue: 10)
        public static let outOfRange = Code(rawValue: 11)
        public static let unimplemented = Code(rawValue: 12)
        public static let `internal` = Code(rawValue: 13)
        public static let unavailable = Code(rawValue: 14)
        public static let dataLoss = Code(rawValue: 15)
        public static let unauthenticated = Code(rawValue: 16)

        private static let names = [
            "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
            "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
            "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
        ]

        /// The code's name, e.g. `NOT_FOUND`; `CODE_<n>` for a number this release does not know.
        public var description: String {
            (0..<Self.names.count).contains(self.rawValue) ? Self.names[self.rawValue] : "CODE_\(self.rawValue)"
        }

        /// The wire enum's value.
        package var wire: Inferwire_V1_StatusCode {
            Inferwire_V1_StatusCode(rawValue: self.rawValue) ?? .UNRECOGNIZED(self.rawValue)
        }

        /// The code a wire enum carries, unknown numbers included.
        package init(_ wire: Inferwire_V1_StatusCode) { self.init(rawValue: wire.rawValue) }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// Rebuilds the error a peer sent in an ERROR frame.
    package init(status: Inferwire_V1_Status) {
        self.init(code: Code(status.code), message: status.message)
    }

    /// The `Status` message for an ERROR frame.
    package var status: Inferwire_V1_Status {
        var status = Inferwire_V1_Status()
        status.code = self.code.wire
        status.message = self.message
        return status
    }

    public var description: String {
        if let cause { return "\(self.code): \(self.message) (cause: \(cause))" }
        return "\(self.code): \(self.message)"
    }
}
