import ArgumentParser
import Foundation
import InferWireAuth
import InferWireBench
import InferWireClient
import InferWireCore

/// TLS and credentials for the client commands (`infer`, `models`, `bench`).
struct ClientSecurityOptions: ParsableArguments {
    @Flag(help: "Connect with TLS; the server's certificate and host name are always verified.")
    var tls = false

    @Option(help: "TLS: PEM file of the CAs to trust instead of the system's (implies --tls).")
    var ca: String?

    @Option(help: "TLS: client certificate chain (PEM), for servers that require one (implies --tls).")
    var cert: String?

    @Option(help: "TLS: the client certificate's private key (PEM).")
    var key: String?

    @Option(help: "TLS: the name the server's certificate must carry, when it differs from the host.")
    var serverName: String?

    @Option(help: "Bearer token or JWT (default: the INFERWIRE_TOKEN environment variable).")
    var token: String?

    func validate() throws {
        guard (self.cert == nil) == (self.key == nil) else { throw ValidationError("--cert and --key go together") }
    }

    var tlsConfiguration: InferWireClient.Configuration.TLS? {
        guard self.tls || self.ca != nil || self.cert != nil || self.serverName != nil else { return nil }
        return .init(
            caFile: self.ca, certificateChainFile: self.cert, privateKeyFile: self.key, serverName: self.serverName)
    }

    var bearerToken: String? {
        self.token ?? ProcessInfo.processInfo.environment["INFERWIRE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// A client configuration with these settings.
    func configuration(compression: Bool = false) -> InferWireClient.Configuration {
        .init(compression: compression, tls: self.tlsConfiguration, bearerToken: self.bearerToken)
    }

    /// The same settings for load-generator connections.
    func connectionSecurity() throws -> ConnectionSecurity {
        try ConnectionSecurity(tls: self.tlsConfiguration, bearerToken: self.bearerToken)
    }
}

/// `inferwire token`: a new random bearer token and its token-file line.
struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a random bearer token and print the line that lists it (hashed) in a token file.")

    @Option(help: "The principal the token authenticates as.")
    var principal: String

    @Option(help: "Comma-separated roles: infer, manage, admin.")
    var roles: String

    @Option(help: "Comma-separated model names or prefixes ending in *; default: every model.")
    var models: String?

    func validate() throws {
        guard !self.principal.isEmpty, !self.principal.contains(where: \.isWhitespace) else {
            throw ValidationError("--principal must be one word")
        }
        if case .failure(let failure) = Principal.Roles.parse(self.roles.split(separator: ",")) {
            throw ValidationError("unknown role '\(failure.name)' (roles: infer, manage, admin)")
        }
    }

    func run() throws {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let token =
            "iw_"
            + Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let line = ["token", TokenFile.digest(of: token), self.principal, self.roles, self.models]
            .compactMap { $0 }.joined(separator: " ")
        print("token (give it to the client; the server keeps only its digest):")
        print("  \(token)")
        print("token file line:")
        print("  \(line)")
    }
}
