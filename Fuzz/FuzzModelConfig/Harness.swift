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

// SwiftPM links an executable's entry point as `FuzzModelConfig_main`; it hands control to libFuzzer's
// driver, which calls LLVMFuzzerTestOneInput above.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

@_cdecl("FuzzModelConfig_main")
public func fuzzEntryPoint(
    _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments) { data, size in
        guard let data else { return 0 }
        return fuzzModelConfig(data, size)
    }
}
