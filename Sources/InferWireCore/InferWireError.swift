public import InferWireProto

/// An error with a status code, the way InferWire reports every failure to a caller.
///
/// The code travels over the wire in an ERROR frame; `message` says what went wrong in
/// words a caller can act on; `cause` keeps the underlying error for logs (it is not sent).
public struct InferWireError: Error, Sendable, CustomStringConvertible {
    /// A status code: the gRPC numbering, so clients in any language map it 1:1.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The wire value.
        public let status: Inferwire_V1_StatusCode

        public init(_ status: Inferwire_V1_StatusCode) { self.status = status }

        public static let cancelled = Code(.cancelled)
        public static let unknown = Code(.unknown)
        public static let invalidArgument = Code(.invalidArgument)
        public static let deadlineExceeded = Code(.deadlineExceeded)
        public static let notFound = Code(.notFound)
        public static let alreadyExists = Code(.alreadyExists)
        public static let permissionDenied = Code(.permissionDenied)
        public static let resourceExhausted = Code(.resourceExhausted)
        public static let failedPrecondition = Code(.failedPrecondition)
        public static let aborted = Code(.aborted)
        public static let unimplemented = Code(.unimplemented)
        public static let `internal` = Code(.internal)
        public static let unavailable = Code(.unavailable)
        public static let unauthenticated = Code(.unauthenticated)

        public var description: String {
            switch self.status {
            case .ok: "OK"
            case .cancelled: "CANCELLED"
            case .unknown: "UNKNOWN"
            case .invalidArgument: "INVALID_ARGUMENT"
            case .deadlineExceeded: "DEADLINE_EXCEEDED"
            case .notFound: "NOT_FOUND"
            case .alreadyExists: "ALREADY_EXISTS"
            case .permissionDenied: "PERMISSION_DENIED"
            case .resourceExhausted: "RESOURCE_EXHAUSTED"
            case .failedPrecondition: "FAILED_PRECONDITION"
            case .aborted: "ABORTED"
            case .outOfRange: "OUT_OF_RANGE"
            case .unimplemented: "UNIMPLEMENTED"
            case .internal: "INTERNAL"
            case .unavailable: "UNAVAILABLE"
            case .dataLoss: "DATA_LOSS"
            case .unauthenticated: "UNAUTHENTICATED"
            case .UNRECOGNIZED(let n): "CODE_\(n)"
            }
        }
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
    public init(status: Inferwire_V1_Status) {
        self.init(code: Code(status.code), message: status.message)
    }

    /// The `Status` message for an ERROR frame.
    public var status: Inferwire_V1_Status {
        var status = Inferwire_V1_Status()
        status.code = self.code.status
        status.message = self.message
        return status
    }

    public var description: String {
        if let cause { return "\(self.code): \(self.message) (cause: \(cause))" }
        return "\(self.code): \(self.message)"
    }
}
