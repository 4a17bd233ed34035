import Foundation
import InferWireONNX

/// The ONNX loader (parse, check every node, plan, trial run) on arbitrary bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOnnxLoader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = try? OnnxModelLoader.model(from: Data(bytes: data, count: size), name: "fuzz")
    return 0
}

// SwiftPM links an executable's entry point as `FuzzOnnxLoader_main`; it hands control to libFuzzer's
// driver, which calls LLVMFuzzerTestOneInput above.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

@_cdecl("FuzzOnnxLoader_main")
public func fuzzEntryPoint(
    _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments) { data, size in
        guard let data else { return 0 }
        return fuzzOnnxLoader(data, size)
    }
}
