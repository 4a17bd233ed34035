import Crypto
public import InferWireCore

/// The token file: which bearer tokens (stored as SHA-256 digests) and which TLS client
/// certificates (by subject common name) authenticate, and as whom.
///
/// One credential per line; `#` starts a comment:
///
///     token <sha256 hex of the token> <principal> <roles> [<models>]
///     certificate <subject common name> <roles> [<models>]
///
/// Roles are comma-separated (`infer`, `manage`, `admin`); models are comma-separated
/// names or prefixes ending in `*`, and left out (or `*`) for every model. A digest may be
/// written with a `sha256:` prefix.
public struct TokenFile: Sendable, Equatable {
    /// Principals by the lowercase hex SHA-256 digest of their token.
    public private(set) var tokens: [String: Principal] = [:]
    /// Principals by TLS client certificate subject common name.
    public private(set) var certificates: [String: Principal] = [:]

    public init() {}

    /// Parses a token file's text; errors name the line.
    public init(parsing text: String) throws(InferWireError) {
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.prefix { $0 != "#" }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard let kind = fields.first else { continue }
            func fail(_ reason: String) -> InferWireError {
                InferWireError(code: .invalidArgument, message: "token file line \(index + 1): \(reason)")
            }
            guard fields.count == 4 || fields.count == 5 || (kind == "certificate" && fields.count == 3) else {
                throw fail(
                    "expected 'token <sha256> <principal> <roles> [<models>]' or 'certificate <common name> <roles> [<models>]'"
                )
            }
            switch kind {
            case "token":
                var digest = fields[1].lowercased()
                if digest.hasPrefix("sha256:") { digest.removeFirst("sha256:".count) }
                guard digest.count == 64, digest.allSatisfy(\.isHexDigit) else {
                    throw fail("'\(fields[1])' is not a SHA-256 digest (64 hex digits); `inferwire token` makes one")
                }
                let principal = try Self.principal(
                    name: String(fields[2]), roles: fields[3], models: fields.count == 5 ? fields[4] : nil, fail: fail)
                guard self.tokens.updateValue(principal, forKey: digest) == nil else {
                    throw fail("this token is listed twice")
                }
            case "certificate":
                let name = String(fields[1])
                let principal = try Self.principal(
                    name: name, roles: fields[2], models: fields.count >= 4 ? fields[3] : nil, fail: fail)
                guard fields.count <= 4 else { throw fail("a certificate line has at most 4 fields") }
                guard self.certificates.updateValue(principal, forKey: name) == nil else {
                    throw fail("certificate '\(name)' is listed twice")
                }
            default:
                throw fail("unknown kind '\(kind)': a line starts with 'token' or 'certificate'")
            }
        }
    }

    private static func principal(
        name: String, roles: Substring, models: Substring?, fail: (String) -> InferWireError
    ) throws(InferWireError) -> Principal {
        let parsed: Principal.Roles
        switch Principal.Roles.parse(roles.split(separator: ",")) {
        case .success(let roles): parsed = roles
        case .failure(let failure): throw fail("unknown role '\(failure.name)' (roles: infer, manage, admin)")
        }
        guard !parsed.isEmpty else { throw fail("principal '\(name)' has no role") }
        return Principal(
            name: name, roles: parsed, models: Principal.ModelScope(patterns: models?.split(separator: ",") ?? []))
    }

    /// The principal a bearer token stands for, if listed.
    public func principal(forToken token: String) -> Principal? {
        self.tokens[Self.digest(of: token)]
    }

    /// The lowercase hex SHA-256 digest of a token, as the file stores it.
    public static func digest(of token: String) -> String {
        SHA256.hash(data: Array(token.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
