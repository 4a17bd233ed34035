package import InferWireProto

/// The management service: versions, traffic, promotion, rollback, history.
extension InferWireClient {
    /// Every model with its versions, states and rollout.
    public func listModels(timeout: Duration? = nil) async throws -> [ModelStatus] {
        try await self.call(
            .listModels, Inferwire_V1_ListModelsRequest(), as: Inferwire_V1_ListModelsResponse.self, timeout: timeout
        )
        .models.map(ModelStatus.init)
    }

    /// One model's versions, their states and counts, its rollout and any shadow comparison.
    public func modelStatus(_ name: String, timeout: Duration? = nil) async throws -> ModelStatus {
        var request = Inferwire_V1_ModelStatusRequest()
        request.name = name
        return ModelStatus(
            try await self.call(.modelStatus, request, as: Inferwire_V1_ModelStatusResponse.self, timeout: timeout)
                .status)
    }

    /// Loads and warms a version off the serving path; returns once it is READY or FAILED.
    public func loadModel(_ name: String, version: Int64, timeout: Duration? = nil) async throws -> VersionStatus {
        var request = Inferwire_V1_LoadModelRequest()
        request.name = name
        request.version = version
        return VersionStatus(
            try await self.call(.loadModel, request, as: Inferwire_V1_LoadModelResponse.self, timeout: timeout).status)
    }

    /// Stops routing to a version, drains its requests and frees it.
    public func unloadModel(_ name: String, version: Int64, timeout: Duration? = nil) async throws -> VersionStatus {
        var request = Inferwire_V1_UnloadModelRequest()
        request.name = name
        request.version = version
        return VersionStatus(
            try await self.call(.unloadModel, request, as: Inferwire_V1_UnloadModelResponse.self, timeout: timeout)
                .status)
    }

    /// Sends `percent` % of unlabelled requests to `canary` (0 clears it).
    public func setTraffic(
        _ name: String, canary: Int64, percent: UInt32, sticky: Bool = false, timeout: Duration? = nil
    ) async throws -> Rollout {
        var request = Inferwire_V1_SetTrafficRequest()
        request.name = name
        request.canaryVersion = canary
        request.percent = percent
        request.sticky = sticky
        return Rollout(
            try await self.call(.setTraffic, request, as: Inferwire_V1_SetTrafficResponse.self, timeout: timeout)
                .rollout)
    }

    /// The canary becomes stable; the old stable stays loaded for a rollback during the grace period.
    public func promote(_ name: String, timeout: Duration? = nil) async throws -> Rollout {
        var request = Inferwire_V1_PromoteRequest()
        request.name = name
        return Rollout(
            try await self.call(.promote, request, as: Inferwire_V1_PromoteResponse.self, timeout: timeout).rollout)
    }

    /// Withdraws the canary if there is one, else returns to the previous stable version.
    public func rollback(_ name: String, timeout: Duration? = nil) async throws -> Rollout {
        var request = Inferwire_V1_RollbackRequest()
        request.name = name
        return Rollout(
            try await self.call(.rollback, request, as: Inferwire_V1_RollbackResponse.self, timeout: timeout).rollout)
    }

    /// Mirrors `percent` % of stable's unlabelled requests to `version` and compares answers
    /// (0 stops); the comparison appears in ``modelStatus(_:timeout:)``'s `shadow`.
    public func setShadow(_ name: String, version: Int64, percent: UInt32, timeout: Duration? = nil) async throws
        -> Rollout
    {
        var request = Inferwire_V1_SetShadowRequest()
        request.name = name
        request.version = version
        request.percent = percent
        return Rollout(
            try await self.call(.setShadow, request, as: Inferwire_V1_SetShadowResponse.self, timeout: timeout).rollout)
    }

    /// Who changed what, when: one model's history, or every model's (oldest first) when `name` is empty.
    public func history(_ name: String = "", timeout: Duration? = nil) async throws -> [HistoryEntry] {
        var request = Inferwire_V1_HistoryRequest()
        request.name = name
        return try await self.call(.history, request, as: Inferwire_V1_HistoryResponse.self, timeout: timeout).entries
            .map(HistoryEntry.init)
    }
}
