import FuzzSupport
import InferWireCore
import InferWireProto

/// The config.pbtxt path: protobuf text format, then the configuration and the signature it
/// declares.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModelConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let wire = try? Inferwire_V1_ModelConfig(textFormatString: text) else { return 0 }
    _ = try? ModelSignature(configuration: ModelConfiguration(wire))
    return 0
}

@_cdecl("FuzzModelConfig_main")
public func entryPoint(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv) { data, size in data.map { fuzzModelConfig($0, size) } ?? 0 }
}
