import InferWireCore
import InferWireProto

/// Which role each method needs, and whether a principal may reach a model
/// (PROTOCOL.md section 1b). Checked per request; both checks are a few comparisons.
enum Authorization {
    /// The roles of which a principal needs one to call `method`; empty: any principal.
    static func roles(for method: UInt16) -> Principal.Roles {
        switch Inferwire_V1_Method(rawValue: Int(method)) {
        case .serverLive?, .serverReady?, .serverMetadata?: []
        case .modelReady?, .modelMetadata?, .infer?, .modelStatistics?: .infer
        case .listModels?, .modelStatus?: [.manage, .admin]
        case .loadModel?, .unloadModel?: .admin
        case .setTraffic?, .promote?, .rollback?, .history?, .setShadow?: .manage
        default: method >= 100 && method < 200 ? [.manage, .admin] : []
        }
    }

    /// A nil principal (no authentication) may call everything.
    static func check(method: UInt16, principal: Principal?) throws(InferWireError) {
        guard let principal else { return }
        let needed = Self.roles(for: method)
        guard needed.isEmpty || !principal.roles.isDisjoint(with: needed) else {
            let name = Inferwire_V1_Method(rawValue: Int(method)).map { "\($0)" } ?? "method \(method)"
            let alternatives = needed.names.map { "'\($0)'" }.joined(separator: " or ")
            throw InferWireError(
                code: .permissionDenied,
                message:
                    "principal '\(principal.name)' (roles: \(principal.roles)) may not call \(Self.wireName(name)): it needs the role \(alternatives)"
            )
        }
    }

    static func check(model: String, principal: Principal?) throws(InferWireError) {
        guard let principal, !principal.models.contains(model) else { return }
        throw InferWireError(
            code: .permissionDenied,
            message: "principal '\(principal.name)' may not reach model '\(model)' (it may reach: \(principal.models))")
    }

    /// `setTraffic` → `SET_TRAFFIC`, as PROTOCOL.md names methods.
    private static func wireName(_ caseName: String) -> String {
        var result = ""
        for character in caseName {
            if character.isUppercase { result.append("_") }
            result.append(contentsOf: character.uppercased())
        }
        return result
    }
}
