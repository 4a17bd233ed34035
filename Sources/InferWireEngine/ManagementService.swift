import InferWireCore
import InferWireProto

/// Decodes management requests (methods 100–199) and answers them from the ``ModelManager``.
struct ManagementService: Sendable {
    let manager: ModelManager

    func handle(method: UInt16, payload: [UInt8], respond: @escaping @Sendable (Result<[UInt8], InferWireError>) -> Void) throws(InferWireError) {
        let manager = self.manager
        switch Inferwire_V1_Method(rawValue: Int(method)) {
        case .listModels?:
            _ = try RequestDispatcher.decode(Inferwire_V1_ListModelsRequest.self, payload)
            var response = Inferwire_V1_ListModelsResponse()
            response.models = manager.list()
            respond(.success(try RequestDispatcher.encode(response)))
        case .modelStatus?:
            let request = try RequestDispatcher.decode(Inferwire_V1_ModelStatusRequest.self, payload)
            var response = Inferwire_V1_ModelStatusResponse()
            response.status = try manager.status(request.name)
            respond(.success(try RequestDispatcher.encode(response)))
        case .loadModel?:
            let request = try RequestDispatcher.decode(Inferwire_V1_LoadModelRequest.self, payload)
            // Loading takes its time: answer when done, off the calling thread.
            Task {
                respond(await Result { () async throws(InferWireError) -> [UInt8] in
                    var response = Inferwire_V1_LoadModelResponse()
                    response.status = try await manager.load(request.name, version: request.version)
                    return try RequestDispatcher.encode(response)
                })
            }
        case .unloadModel?:
            let request = try RequestDispatcher.decode(Inferwire_V1_UnloadModelRequest.self, payload)
            Task {
                respond(await Result { () async throws(InferWireError) -> [UInt8] in
                    var response = Inferwire_V1_UnloadModelResponse()
                    response.status = try await manager.unload(request.name, version: request.version)
                    return try RequestDispatcher.encode(response)
                })
            }
        case .setTraffic?:
            let request = try RequestDispatcher.decode(Inferwire_V1_SetTrafficRequest.self, payload)
            var response = Inferwire_V1_SetTrafficResponse()
            response.rollout = try manager.setTraffic(request.name, canary: request.canaryVersion, percent: Int(request.percent), sticky: request.sticky)
            respond(.success(try RequestDispatcher.encode(response)))
        case .promote?:
            let request = try RequestDispatcher.decode(Inferwire_V1_PromoteRequest.self, payload)
            var response = Inferwire_V1_PromoteResponse()
            response.rollout = try manager.promote(request.name)
            respond(.success(try RequestDispatcher.encode(response)))
        case .rollback?:
            let request = try RequestDispatcher.decode(Inferwire_V1_RollbackRequest.self, payload)
            var response = Inferwire_V1_RollbackResponse()
            response.rollout = try manager.rollback(request.name)
            respond(.success(try RequestDispatcher.encode(response)))
        case .setShadow?:
            let request = try RequestDispatcher.decode(Inferwire_V1_SetShadowRequest.self, payload)
            var response = Inferwire_V1_SetShadowResponse()
            response.rollout = try manager.setShadow(request.name, version: request.version, percent: Int(request.percent))
            respond(.success(try RequestDispatcher.encode(response)))
        case .history?:
            let request = try RequestDispatcher.decode(Inferwire_V1_HistoryRequest.self, payload)
            var response = Inferwire_V1_HistoryResponse()
            response.entries = try manager.history(request.name)
            respond(.success(try RequestDispatcher.encode(response)))
        default:
            throw InferWireError(code: .unimplemented, message: "management method \(method) is not implemented")
        }
    }
}

extension Result where Failure == InferWireError {
    /// Runs an async throwing body into a Result.
    init(catching body: () async throws(InferWireError) -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
