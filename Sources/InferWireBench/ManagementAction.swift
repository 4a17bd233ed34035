public import InferWireClient
public import InferWireCore
package import InferWireProto

/// A management call to run while load runs (`inferwire bench --during "promote fraud"`).
public enum ManagementAction: Sendable, Equatable {
    case promote(model: String)
    case rollback(model: String)
    case load(model: String, version: Int64)
    case unload(model: String, version: Int64)
    /// Send `percent` of unlabelled traffic to `version` as the canary (0 clears it).
    case traffic(model: String, version: Int64, percent: UInt32)
    case shadow(model: String, version: Int64, percent: UInt32)

    /// Parses "ACTION MODEL [ARGS]": `promote M`, `rollback M`, `load M V`, `unload M V`,
    /// `traffic M V PERCENT`, `shadow M V PERCENT`.
    public init(parsing text: String) throws(InferWireError) {
        let words = text.split(separator: " ").map(String.init)
        func bad(_ why: String) -> InferWireError {
            InferWireError(code: .invalidArgument, message: "--during \"\(text)\": \(why)")
        }
        guard words.count >= 2 else { throw bad("expected ACTION MODEL [ARGS], e.g. \"promote fraud\"") }
        let model = words[1]
        func count(_ n: Int) throws(InferWireError) {
            guard words.count == n else { throw bad("\(words[0]) takes \(n - 1) argument(s) after the action") }
        }
        func version() throws(InferWireError) -> Int64 {
            guard let v = Int64(words[2]), v > 0 else {
                throw bad("version must be a positive integer, got '\(words[2])'")
            }
            return v
        }
        func percent() throws(InferWireError) -> UInt32 {
            guard let p = UInt32(words[3]), p <= 100 else { throw bad("percent must be 0…100, got '\(words[3])'") }
            return p
        }
        switch words[0] {
        case "promote":
            try count(2)
            self = .promote(model: model)
        case "rollback":
            try count(2)
            self = .rollback(model: model)
        case "load":
            try count(3)
            self = .load(model: model, version: try version())
        case "unload":
            try count(3)
            self = .unload(model: model, version: try version())
        case "traffic":
            try count(4)
            // Version 0 clears the canary.
            guard let v = Int64(words[2]), v >= 0 else { throw bad("version must be 0 or positive, got '\(words[2])'") }
            self = .traffic(model: model, version: v, percent: try percent())
        case "shadow":
            try count(4)
            self = .shadow(model: model, version: try version(), percent: try percent())
        default: throw bad("unknown action '\(words[0])' (promote, rollback, load, unload, traffic, shadow)")
        }
    }

    /// Runs the action and describes the server's answer.
    public func run(on client: any InferWireClientProtocol) async throws -> String {
        switch self {
        case .promote(let model): return try await client.promote(model).description
        case .rollback(let model): return try await client.rollback(model).description
        case .load(let model, let version):
            let status = try await client.loadModel(model, version: version)
            return "version \(status.version) \(status.state)\(status.reason.isEmpty ? "" : ": \(status.reason)")"
        case .unload(let model, let version):
            let status = try await client.unloadModel(model, version: version)
            return "version \(status.version) \(status.state)"
        case .traffic(let model, let version, let percent):
            return try await client.setTraffic(model, canary: version, percent: percent).description
        case .shadow(let model, let version, let percent):
            return try await client.setShadow(model, version: version, percent: percent).description
        }
    }
}
