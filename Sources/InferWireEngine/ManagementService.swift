import InferWireCore
import InferWireProto

/// Decodes management requests (methods 100–199) and answers them from the ``ModelManager``.
///
/// Queries answer at once on the calling thread. Changes — which load, drain or persist —
/// are handed to the manager's owned work (``ModelManager/run(pollInterval:guardInterval:)``)
/// and answered when done, never on the calling thread, which may be an event loop; when
/// that work is not running (not started, or shut down) they are answered UNAVAILABLE.
struct ManagementService: Sendable {
    let manager: ModelManager
    /// Who asks: checked against each request's model, recorded in history; nil without
    /// authentication.
    let principal: Principal?

    private var actor: RolloutActor {
        self.principal.map { .principal($0.name) } ?? .api
    }

    func handle(
        method: UInt16, payload: [UInt8], respond: @escaping @Sendable (Result<[UInt8], InferWireError>) -> Void
    ) throws(InferWireError) {
        let manager = self.manager
        let principal = self.principal
        let actor = self.actor
        switch Inferwire_V1_Method(rawValue: Int(method)) {
        case .listModels?:
            _ = try RequestDispatcher.decode(Inferwire_V1_ListModelsRequest.self, payload)
            var response = Inferwire_V1_ListModelsResponse()
            response.models = manager.list().filter { principal?.models.contains($0.name) ?? true }
            respond(.success(try RequestDispatcher.encode(response)))
        case .modelStatus?:
            let request = try RequestDispatcher.decode(Inferwire_V1_ModelStatusRequest.self, payload)
            try Authorization.check(model: request.name, principal: principal)
            var response = Inferwire_V1_ModelStatusResponse()
            response.status = try manager.status(request.name)
            respond(.success(try RequestDispatcher.encode(response)))
        case .history?:
            let request = try RequestDispatcher.decode(Inferwire_V1_HistoryRequest.self, payload)
            try Authorization.check(model: request.name, principal: principal)
            var response = Inferwire_V1_HistoryResponse()
            response.entries = try manager.history(request.name)
            respond(.success(try RequestDispatcher.encode(response)))
        case .loadModel?:
            let request = try RequestDispatcher.decode(Inferwire_V1_LoadModelRequest.self, payload)
            try Authorization.check(model: request.name, principal: principal)
            manager.submit(
                { () async throws(InferWireError) -> [UInt8] in
                    var response = Inferwire_V1_LoadModelResponse()
                    response.status = try await manager.load(request.name, version: request.version, actor: actor)
                    return try RequestDispatcher.encode(response)
                }, respond: respond)
        case .unloadModel?:
            let request = try RequestDispatcher.decode(Inferwire_V1_UnloadModelRequest.self, payload)
            try Authorization.check(model: request.name, principal: principal)
            manager.submit(
                { () async throws(InferWireError) -> [UInt8] in
                    var response = Inferwire_V1_UnloadModelResponse()
                    response.status = try await manager.unload(request.name, version: request.version, actor: actor)
                    return try RequestDispatcher.encode(response)
                }, respond: respond)
        case .setTraffic?:
            let request = try RequestDispatcher.decode(Inferwire_V1_SetTrafficRequest.self, payload)
            try Authorization.check(model: request.name, principal: principal)
            manager.submit(
                { () async throws(InferWireError) -> [UInt8] in
                    var response = Inferwire_V1_SetTrafficResponse()
                    response.rollout = try await manager.setTraffic(
                        request.name, canary: request.canaryVersion, percent: Int(request.percent),
                        sticky: request.sticky, actor: actor)
                    return try RequestDispatcher.encode(response)
                }, respond: respond)
        case .promote?:
            let request = try RequestDispatcher.decode(Inferwire_V1_PromoteRequest.self, payload)
            try Authorization.check(model: request.name, principal: principal)
            manager.submit(
                { () async throws(InferWireError) -> [UInt8] in
                    var response = Inferwire_V1_PromoteResponse()
                    response.rollout = try await manager.promote(request.name, actor: actor)
                    return try RequestDispatcher.encode(response)
                }, respond: respond)
        case .rollback?:
            let request = try RequestDispatcher.decode(Inferwire_V1_RollbackRequest.self, payload)
            try Authorization.check(model: request.name, principal: principal)
            manager.submit(
                { () async throws(InferWireError) -> [UInt8] in
                    var response = Inferwire_V1_RollbackResponse()
                    response.rollout = try await manager.rollback(request.name, actor: actor)
                    return try RequestDispatcher.encode(response)
                }, respond: respond)
        case .setShadow?:
            let request = try RequestDispatcher.decode(Inferwire_V1_SetShadowRequest.self, payload)
            try Authorization.check(model: request.name, principal: principal)
            manager.submit(
                { () async throws(InferWireError) -> [UInt8] in
                    var response = Inferwire_V1_SetShadowResponse()
                    response.rollout = try await manager.setShadow(
                        request.name, version: request.version, percent: Int(request.percent), actor: actor)
                    return try RequestDispatcher.encode(response)
                }, respond: respond)
        default:
            throw InferWireError(code: .unimplemented, message: "management method \(method) is not implemented")
        }
    }
}
