import Foundation
public import InferWireCore
import JWTKit

/// Verifies JWTs with jwt-kit against keys from a JWKS file and turns their claims into a
/// ``Principal``: `sub` names it, `roles` (an array, or a space-separated string) gives
/// its roles, `models` (optional) limits the models it may reach.
///
/// Accepted algorithms are HS256, RS256 and ES256. `exp` is required; `nbf` is checked when
/// present; `iss` and `aud` are checked when the verifier is configured with them.
public struct JWTVerifier: Sendable {
    /// What a token must say beyond a good signature.
    public struct Expectations: Sendable, Equatable {
        /// The `iss` a token must carry; nil: not checked.
        public var issuer: String?
        /// A value the token's `aud` must include; nil: not checked.
        public var audience: String?

        public init(issuer: String? = nil, audience: String? = nil) {
            self.issuer = issuer
            self.audience = audience
        }
    }

    static let acceptedAlgorithms: Set<String> = ["HS256", "RS256", "ES256"]

    private let keys: JWTKeyCollection
    private let expectations: Expectations
    /// Key ids in the set, for messages.
    private let keyCount: Int

    /// - Parameters:
    ///   - jwks: a JSON Web Key Set: RSA (`"kty": "RSA"`), P-256 (`"kty": "EC"`) and
    ///     HMAC (`"kty": "oct"`, the secret in `k`, base64url) keys.
    ///   - expectations: the issuer and audience tokens must name.
    public init(jwks: String, expectations: Expectations) async throws(InferWireError) {
        let keys = JWTKeyCollection()
        var count = 0
        do {
            guard let object = try JSONSerialization.jsonObject(with: Data(jwks.utf8)) as? [String: Any],
                let entries = object["keys"] as? [[String: Any]]
            else {
                throw InferWireError(code: .invalidArgument, message: "JWKS is not an object with a 'keys' array")
            }
            var asymmetric: [[String: Any]] = []
            for entry in entries {
                let kid = entry["kid"] as? String
                if entry["kty"] as? String == "oct" {
                    guard let secret = entry["k"] as? String, let bytes = Self.base64URLDecode(secret), !bytes.isEmpty
                    else {
                        throw InferWireError(
                            code: .invalidArgument, message: "JWKS oct key \(kid ?? "without kid") has no valid 'k'")
                    }
                    // RFC 7518 3.2: an HS256 key is at least as long as the hash.
                    guard bytes.count >= 32 else {
                        throw InferWireError(
                            code: .invalidArgument,
                            message:
                                "JWKS oct key \(kid ?? "without kid") is \(bytes.count) bytes; HS256 needs at least 32")
                    }
                    if let alg = entry["alg"] as? String, alg != "HS256" {
                        throw InferWireError(
                            code: .invalidArgument, message: "JWKS oct key \(kid ?? "") has alg \(alg); only HS256")
                    }
                    await keys.add(
                        hmac: HMACKey(from: bytes), digestAlgorithm: .sha256, kid: kid.map { JWKIdentifier(string: $0) }
                    )
                } else {
                    asymmetric.append(entry)
                }
                count += 1
            }
            if !asymmetric.isEmpty {
                let data = try JSONSerialization.data(withJSONObject: ["keys": asymmetric])
                try await keys.add(jwksJSON: String(decoding: data, as: UTF8.self))
            }
        } catch let error as InferWireError {
            throw error
        } catch {
            throw InferWireError(code: .invalidArgument, message: "JWKS does not load: \(error)", cause: error)
        }
        guard count > 0 else { throw InferWireError(code: .invalidArgument, message: "JWKS has no keys") }
        self.keys = keys
        self.expectations = expectations
        self.keyCount = count
    }

    /// Whether `token` has the shape of a JWT (three base64url parts), as opposed to an
    /// opaque token from the token file.
    public static func looksLikeJWT(_ token: String) -> Bool {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 3 && parts[0].hasPrefix("eyJ")
    }

    /// The principal a token stands for; UNAUTHENTICATED naming the failed check otherwise.
    public func verify(_ token: String, now: Date = Date()) async throws(InferWireError) -> Principal {
        func fail(_ reason: String) -> InferWireError {
            InferWireError(code: .unauthenticated, message: "JWT rejected: \(reason)")
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = Self.base64URLDecode(String(parts[0])),
            let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any]
        else { throw fail("not a JWT (expected three base64url parts, the first a JSON header)") }
        let algorithm = header["alg"] as? String ?? "(none)"
        guard Self.acceptedAlgorithms.contains(algorithm) else {
            throw fail("algorithm \(algorithm) is not accepted (HS256, RS256, ES256)")
        }
        let claims: Claims
        do {
            claims = try await self.keys.verify(token, as: Claims.self)
        } catch let error as JWTError {
            switch error.errorType {
            case .signatureVerificationFailed:
                throw fail("the signature does not verify with the trusted key")
            case .unknownKID:
                throw fail("key id '\(header["kid"] as? String ?? "")' is not among the \(self.keyCount) trusted keys")
            case .missingKIDHeader:
                throw fail("the token names no key id (kid) and the key set has no default key")
            case .claimVerificationFailure, .malformedToken:
                throw fail(error.reason ?? "\(error)")
            default:
                throw fail(error.reason ?? "\(error)")
            }
        } catch {
            throw fail("\(error)")
        }
        return try claims.principal(expectations: self.expectations, now: now, fail: fail)
    }

    static func base64URLDecode(_ text: String) -> [UInt8]? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64.append("=") }
        return Data(base64Encoded: base64).map { [UInt8]($0) }
    }

    /// The claims InferWire reads. Checks are made by ``principal(expectations:now:fail:)``,
    /// not jwt-kit's `verify(using:)`, so that each failure says which check failed.
    struct Claims: JWTPayload {
        var sub: SubjectClaim?
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim?
        var aud: AudienceClaim?
        var roles: RolesClaim?
        var models: [String]?

        func verify(using algorithm: some JWTAlgorithm) async throws {}

        func principal(expectations: Expectations, now: Date, fail: (String) -> InferWireError)
            throws(InferWireError) -> Principal
        {
            let formatter = ISO8601DateFormatter()
            guard let exp = self.exp else { throw fail("it has no exp claim; tokens must expire") }
            guard exp.value > now else { throw fail("it expired at \(formatter.string(from: exp.value))") }
            if let nbf = self.nbf, nbf.value > now {
                throw fail("it is not valid before \(formatter.string(from: nbf.value))")
            }
            if let issuer = expectations.issuer, self.iss?.value != issuer {
                throw fail("issuer '\(self.iss?.value ?? "")' is not the expected '\(issuer)'")
            }
            if let audience = expectations.audience, !(self.aud?.value.contains(audience) ?? false) {
                throw fail("audience \(self.aud?.value ?? []) does not include '\(audience)'")
            }
            guard let subject = self.sub?.value, !subject.isEmpty else { throw fail("it has no sub claim") }
            let roles: Principal.Roles
            switch Principal.Roles.parse(self.roles?.names ?? []) {
            case .success(let parsed): roles = parsed
            case .failure(let failure): throw fail("unknown role '\(failure.name)' (roles: infer, manage, admin)")
            }
            guard !roles.isEmpty else { throw fail("it grants no role (claim 'roles': infer, manage, admin)") }
            return Principal(
                name: subject, roles: roles, models: Principal.ModelScope(patterns: self.models ?? []),
                expiresAt: Int64(exp.value.timeIntervalSince1970.rounded(.down)))
        }
    }

    /// `roles` as a JSON array of names or one space-separated string (the OAuth `scope` style).
    struct RolesClaim: Codable, Sendable {
        var names: [String]

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let list = try? container.decode([String].self) {
                self.names = list
            } else {
                self.names = try container.decode(String.self).split(separator: " ").map(String.init)
            }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(self.names)
        }
    }
}
