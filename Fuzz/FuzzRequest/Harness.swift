import FuzzSupport
import InferWireCore
import InferWireEngine
import InferWireProto

/// Request decoding, routing and validation on arbitrary payloads: the first byte picks the
/// method, the rest is the payload. The models are the built-ins, so everything runs inline.
let dispatcher: RequestDispatcher = {
    var identity = Inferwire_V1_ModelConfig()
    identity.name = "identity"
    identity.platform = "identity"
    identity.maxBatchSize = 8
    var spec = Inferwire_V1_TensorSpec()
    spec.name = "INPUT0"
    spec.datatype = .fp32
    spec.shape = [4]
    identity.input = [spec]
    spec.name = "OUTPUT0"
    identity.output = [spec]
    let model = try! IdentityModelLoader().load(config: identity, versionDirectory: "/nonexistent")
    let loaded = LoadedModel(name: "identity", version: 1, config: identity, model: model)
    return RequestDispatcher(registry: ModelRegistry(contents: .init(models: [loaded])))
}()

let methods: [UInt16] = [1, 2, 3, 4, 5, 6, 7, 100, 101, 102, 999]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let method = methods[Int(bytes[0]) % methods.count]
    dispatcher.handle(method: method, payload: Array(bytes[1...]), deadline: nil) { _ in }
    return 0
}

@_cdecl("FuzzRequest_main")
public func entryPoint(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv) { data, size in data.map { fuzzRequest($0, size) } ?? 0 }
}
