public import NIOCore

extension Frame {
    /// Encodes a frame into one buffer, deflating the payload when `compress` is set and
    /// the payload is large enough for compression to pay (``PayloadCompression/minimumSize``);
    /// the header then carries ``FrameFlags/compressed``.
    public static func encode(
        _ header: FrameHeader, bytes: [UInt8], compress: Bool, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        guard compress, bytes.count >= PayloadCompression.minimumSize else {
            return Frame.encode(header, bytes: bytes, allocator: allocator)
        }
        var header = header
        header.flags.insert(.compressed)
        return Frame.encode(
            header, payload: PayloadCompression.compress(allocator.buffer(bytes: bytes), allocator: allocator),
            allocator: allocator)
    }

    /// Encodes a REQUEST frame with request id 0: the sender sets the id when it sends, as
    /// only the connection knows which ids are free.
    ///
    /// - Parameters:
    ///   - method: the method number.
    ///   - payload: the serialized request message.
    ///   - timeout: the caller's deadline from now; the header carries at most `UInt32.max` µs
    ///     (≈ 71.6 minutes), so a longer one must also be enforced by the caller.
    ///   - compression: compress the payload when worthwhile, and ask for compressed answers.
    public static func request(
        method: UInt16, payload: [UInt8], timeout: Duration?, compression: Bool, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var header = FrameHeader(payloadLength: 0, type: .request, method: method, requestID: 0)
        if let timeout {
            let (seconds, attoseconds) = timeout.components
            let micros = seconds.multipliedReportingOverflow(by: 1_000_000)
            let total =
                micros.overflow
                ? Int64.max : micros.partialValue.addingReportingOverflow(attoseconds / 1_000_000_000_000).partialValue
            header.timeoutMicros = UInt32(clamping: max(1, total))
        }
        if compression { header.flags.insert(.compressResponse) }
        return Frame.encode(header, bytes: payload, compress: compression, allocator: allocator)
    }

    /// Sets the request id of an encoded REQUEST frame in place.
    public static func setRequestID(_ id: UInt32, in frame: inout ByteBuffer) {
        frame.setInteger(id, at: frame.readerIndex + FrameHeader.requestIDOffset)
    }
}
