import FuzzSupport
import InferWireWire
import NIOCore

/// The server's frame decoder on arbitrary bytes, delivered in chunks whose sizes come from
/// the input's first byte. Errors are expected; crashes, hangs and leaks are the findings.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let chunk = Int(bytes[0]) % 32 + 1
    let processor = NIOSingleStepByteToMessageProcessor(FrameDecoder(maxPayloadSize: 1 << 16, expectPreface: true))
    var offset = 1
    do {
        while offset < size {
            let end = min(size, offset + chunk)
            try processor.process(buffer: ByteBuffer(bytes: bytes[offset..<end])) { _ in }
            offset = end
        }
        try processor.finishProcessing(seenEOF: true) { _ in }
    } catch {}
    return 0
}

@_cdecl("FuzzFrameDecoder_main")
public func entryPoint(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv) { data, size in data.map { fuzzFrameDecoder($0, size) } ?? 0 }
}
