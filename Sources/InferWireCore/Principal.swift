public import InferWireProto

/// Who a connection acts as and what it may do: the result of authentication, checked
/// (by role and model) on every request.
public struct Principal: Sendable, Hashable {
    /// What a principal may do. Roles do not imply one another.
    public struct Roles: OptionSet, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// Inference, model readiness and metadata, statistics.
        public static let infer = Roles(rawValue: 1 << 0)
        /// Traffic, promote, rollback, shadow, history, model status.
        public static let manage = Roles(rawValue: 1 << 1)
        /// Loading and unloading versions, model status.
        public static let admin = Roles(rawValue: 1 << 2)
        public static let all: Roles = [.infer, .manage, .admin]

        /// The roles' names, in a fixed order: "infer", "manage", "admin".
        public var names: [String] {
            var names: [String] = []
            if self.contains(.infer) { names.append("infer") }
            if self.contains(.manage) { names.append("manage") }
            if self.contains(.admin) { names.append("admin") }
            return names
        }

        public var description: String { self.names.isEmpty ? "no role" : self.names.joined(separator: ",") }

        /// Parses role names ("infer", "manage", "admin"); nil names the first unknown one.
        public static func parse(_ names: some Sequence<some StringProtocol>) -> Result<Roles, ParseFailure> {
            var roles: Roles = []
            for name in names {
                switch name {
                case "infer": roles.insert(.infer)
                case "manage": roles.insert(.manage)
                case "admin": roles.insert(.admin)
                default: return .failure(ParseFailure(name: String(name)))
                }
            }
            return .success(roles)
        }

        public struct ParseFailure: Error, Sendable {
            public var name: String
        }
    }

    /// The models a principal may reach: every model, or names and prefixes.
    public struct ModelScope: Sendable, Hashable, CustomStringConvertible {
        /// Exact model names.
        public private(set) var names: Set<String>
        /// Prefixes (written with a trailing `*`).
        public private(set) var prefixes: [String]
        /// Whether every model is in scope.
        public let isUnrestricted: Bool

        /// Every model.
        public static let all = ModelScope(names: [], prefixes: [], isUnrestricted: true)

        private init(names: Set<String>, prefixes: [String], isUnrestricted: Bool) {
            self.names = names
            self.prefixes = prefixes
            self.isUnrestricted = isUnrestricted
        }

        /// From patterns: a model name, a prefix ending in `*`, or `*` alone for every model.
        /// No patterns at all means every model.
        public init(patterns: some Sequence<some StringProtocol>) {
            var names: Set<String> = []
            var prefixes: [String] = []
            var unrestricted = false
            var any = false
            for pattern in patterns {
                any = true
                if pattern == "*" {
                    unrestricted = true
                } else if pattern.hasSuffix("*") {
                    prefixes.append(String(pattern.dropLast()))
                } else {
                    names.insert(String(pattern))
                }
            }
            self.init(names: names, prefixes: prefixes, isUnrestricted: unrestricted || !any)
        }

        /// Whether the model named `name` is in scope.
        public func contains(_ name: String) -> Bool {
            if self.isUnrestricted || self.names.contains(name) { return true }
            for prefix in self.prefixes where name.hasPrefix(prefix) { return true }
            return false
        }

        /// The patterns this scope was made from (empty for every model).
        public var patterns: [String] {
            self.isUnrestricted ? [] : self.names.sorted() + self.prefixes.map { $0 + "*" }
        }

        public var description: String {
            self.isUnrestricted ? "every model" : self.patterns.joined(separator: ",")
        }
    }

    /// The token file's name for a token, a JWT's `sub`, or a certificate's common name.
    public var name: String
    public var roles: Roles
    public var models: ModelScope
    /// When the credentials stop being accepted (seconds since 1970); nil: never.
    public var expiresAt: Int64?

    public init(name: String, roles: Roles, models: ModelScope = .all, expiresAt: Int64? = nil) {
        self.name = name
        self.roles = roles
        self.models = models
        self.expiresAt = expiresAt
    }

    /// The caller on a server without authentication: every role, every model.
    public static let anonymous = Principal(name: "anonymous", roles: .all)

    /// The principal as the wire carries it.
    public var wire: Inferwire_V1_Principal {
        var wire = Inferwire_V1_Principal()
        wire.name = self.name
        wire.roles = self.roles.names
        wire.models = self.models.patterns
        wire.expiresUnixSeconds = self.expiresAt ?? 0
        return wire
    }

    /// A principal from the wire; unknown role names are dropped.
    public init(_ wire: Inferwire_V1_Principal) {
        self.name = wire.name
        self.roles = (try? Roles.parse(wire.roles.filter { ["infer", "manage", "admin"].contains($0) }).get()) ?? []
        self.models = ModelScope(patterns: wire.models)
        self.expiresAt = wire.expiresUnixSeconds == 0 ? nil : wire.expiresUnixSeconds
    }
}
