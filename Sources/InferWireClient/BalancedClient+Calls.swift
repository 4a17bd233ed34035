public import InferWireCore
internal import InferWireProto

/// The calls of ``InferWireClient``, each sent to one endpoint chosen per call; inference and
/// the read-only calls are retried as the type's documentation says, management calls never.
extension BalancedClient {
    /// Runs a model on `inputs` and returns its outputs as tensors, on the endpoint with fewer
    /// calls in flight of two drawn at random; retried on another endpoint when it did not complete.
    /// - Parameters:
    ///   - version: an exact version; or `label` (`stable`, `canary`); or neither, to let the server route.
    ///   - outputs: the outputs to return; empty for all.
    ///   - timeout: the deadline of the whole call, retries included.
    public func infer(
        model: String, version: Int64? = nil, label: String? = nil, inputs: [Tensor], outputs: [String] = [],
        timeout: Duration? = nil, traceParent: TraceParent? = nil, traceState: String? = nil
    ) async throws -> InferResult {
        var request = Inferwire_V1_InferRequest()
        request.modelName = model
        if let version { request.version.version = version } else if let label { request.version.label = label }
        request.inputs = inputs.map(\.wire)
        request.outputNames = outputs
        if let traceParent {
            request.traceparent = traceParent.description
            request.tracestate = traceState ?? ""
        }
        let response = try await self.infer(request, timeout: timeout)
        return InferResult(
            modelName: response.modelName, modelVersion: response.modelVersion,
            outputs: try response.outputs.map { try Tensor(wire: $0) })
    }

    /// Whether the endpoint asked is up and answering.
    public func serverLive(timeout: Duration? = nil) async throws -> Bool {
        try await self.call(
            .serverLive, Inferwire_V1_ServerLiveRequest(), as: Inferwire_V1_ServerLiveResponse.self, timeout: timeout,
            effect: .idempotent
        ).live
    }

    /// Why the endpoint asked does not accept work; empty when it does.
    public func serverNotReadyReasons(timeout: Duration? = nil) async throws -> [String] {
        let answer = try await self.call(
            .serverReady, Inferwire_V1_ServerReadyRequest(), as: Inferwire_V1_ServerReadyResponse.self,
            timeout: timeout, effect: .idempotent)
        return answer.ready
            ? [] : answer.notReadyReasons.isEmpty ? ["the server says it is not ready"] : answer.notReadyReasons
    }

    /// Whether the endpoint asked accepts work.
    public func serverReady(timeout: Duration? = nil) async throws -> Bool {
        try await self.call(
            .serverReady, Inferwire_V1_ServerReadyRequest(), as: Inferwire_V1_ServerReadyResponse.self,
            timeout: timeout, effect: .idempotent
        ).ready
    }

    /// The name, release, protocol versions, extensions and runtime facts of the endpoint asked.
    public func serverMetadata(timeout: Duration? = nil) async throws -> ServerMetadata {
        ServerMetadata(
            try await self.call(
                .serverMetadata, Inferwire_V1_ServerMetadataRequest(), as: Inferwire_V1_ServerMetadataResponse.self,
                timeout: timeout, effect: .idempotent))
    }

    /// Whether `name` (or that version of it) can serve on the endpoint asked.
    public func modelReady(_ name: String, version: Int64? = nil, timeout: Duration? = nil) async throws
        -> ModelReadiness
    {
        var request = Inferwire_V1_ModelReadyRequest()
        request.name = name
        if let version { request.version.version = version }
        return ModelReadiness(
            try await self.call(
                .modelReady, request, as: Inferwire_V1_ModelReadyResponse.self, timeout: timeout, effect: .idempotent))
    }

    /// A model's inputs, outputs and versions.
    public func modelMetadata(_ name: String, version: Int64? = nil, label: String? = nil, timeout: Duration? = nil)
        async throws -> ModelMetadata
    {
        var request = Inferwire_V1_ModelMetadataRequest()
        request.name = name
        if let version { request.version.version = version } else if let label { request.version.label = label }
        return ModelMetadata(
            try await self.call(
                .modelMetadata, request, as: Inferwire_V1_ModelMetadataResponse.self, timeout: timeout,
                effect: .idempotent))
    }

    /// The statistics of the endpoint asked (each server counts its own requests; use
    /// ``endpointClients()`` to ask every one).
    public func modelStatistics(_ name: String = "", timeout: Duration? = nil) async throws -> [VersionStatistics] {
        var request = Inferwire_V1_ModelStatisticsRequest()
        request.name = name
        return try await self.call(
            .modelStatistics, request, as: Inferwire_V1_ModelStatisticsResponse.self, timeout: timeout,
            effect: .idempotent
        )
        .versions.map(VersionStatistics.init)
    }

    // MARK: Management: one endpoint, never sent twice

    /// Every model of the endpoint asked, with its versions, states and rollout.
    public func listModels(timeout: Duration? = nil) async throws -> [ModelStatus] {
        try await self.call(
            .listModels, Inferwire_V1_ListModelsRequest(), as: Inferwire_V1_ListModelsResponse.self, timeout: timeout,
            effect: .management
        )
        .models.map(ModelStatus.init)
    }

    /// One model's versions, states and counts, and its rollout, on the endpoint asked.
    public func modelStatus(_ name: String, timeout: Duration? = nil) async throws -> ModelStatus {
        var request = Inferwire_V1_ModelStatusRequest()
        request.name = name
        return ModelStatus(
            try await self.call(
                .modelStatus, request, as: Inferwire_V1_ModelStatusResponse.self, timeout: timeout,
                effect: .management
            ).status)
    }

    /// Loads a version on one endpoint; returns once it is READY or FAILED there.
    public func loadModel(_ name: String, version: Int64, timeout: Duration? = nil) async throws -> VersionStatus {
        var request = Inferwire_V1_LoadModelRequest()
        request.name = name
        request.version = version
        return VersionStatus(
            try await self.call(
                .loadModel, request, as: Inferwire_V1_LoadModelResponse.self, timeout: timeout, effect: .management
            ).status)
    }

    /// Unloads a version on one endpoint.
    public func unloadModel(_ name: String, version: Int64, timeout: Duration? = nil) async throws -> VersionStatus {
        var request = Inferwire_V1_UnloadModelRequest()
        request.name = name
        request.version = version
        return VersionStatus(
            try await self.call(
                .unloadModel, request, as: Inferwire_V1_UnloadModelResponse.self, timeout: timeout,
                effect: .management
            ).status)
    }

    /// Sets one endpoint's canary traffic.
    public func setTraffic(
        _ name: String, canary: Int64, percent: UInt32, sticky: Bool = false, timeout: Duration? = nil
    ) async throws -> Rollout {
        var request = Inferwire_V1_SetTrafficRequest()
        request.name = name
        request.canaryVersion = canary
        request.percent = percent
        request.sticky = sticky
        return Rollout(
            try await self.call(
                .setTraffic, request, as: Inferwire_V1_SetTrafficResponse.self, timeout: timeout, effect: .management
            ).rollout)
    }

    /// Promotes the canary on one endpoint.
    public func promote(_ name: String, timeout: Duration? = nil) async throws -> Rollout {
        var request = Inferwire_V1_PromoteRequest()
        request.name = name
        return Rollout(
            try await self.call(
                .promote, request, as: Inferwire_V1_PromoteResponse.self, timeout: timeout, effect: .management
            ).rollout)
    }

    /// Rolls back on one endpoint.
    public func rollback(_ name: String, timeout: Duration? = nil) async throws -> Rollout {
        var request = Inferwire_V1_RollbackRequest()
        request.name = name
        return Rollout(
            try await self.call(
                .rollback, request, as: Inferwire_V1_RollbackResponse.self, timeout: timeout, effect: .management
            ).rollout)
    }

    /// Sets one endpoint's shadow traffic.
    public func setShadow(_ name: String, version: Int64, percent: UInt32, timeout: Duration? = nil) async throws
        -> Rollout
    {
        var request = Inferwire_V1_SetShadowRequest()
        request.name = name
        request.version = version
        request.percent = percent
        return Rollout(
            try await self.call(
                .setShadow, request, as: Inferwire_V1_SetShadowResponse.self, timeout: timeout, effect: .management
            ).rollout)
    }

    /// One endpoint's rollout history.
    public func history(_ name: String = "", timeout: Duration? = nil) async throws -> [HistoryEntry] {
        var request = Inferwire_V1_HistoryRequest()
        request.name = name
        return try await self.call(
            .history, request, as: Inferwire_V1_HistoryResponse.self, timeout: timeout, effect: .management
        ).entries.map(HistoryEntry.init)
    }
}
