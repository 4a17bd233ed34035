import Foundation
import FuzzSupport
import InferWireONNX

/// The ONNX loader (parse, check every node, plan, trial run) on arbitrary bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOnnxLoader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = try? OnnxModelLoader.model(from: Data(bytes: data, count: size), name: "fuzz")
    return 0
}

@_cdecl("FuzzOnnxLoader_main")
public func entryPoint(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv) { data, size in data.map { fuzzOnnxLoader($0, size) } ?? 0 }
}
