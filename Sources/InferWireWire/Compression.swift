internal import CZlib
public import NIOCore

/// zlib (RFC 1950) compression of frame payloads.
public enum PayloadCompression {
    /// Failure to inflate a payload.
    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public enum Kind: Hashable, Sendable {
            /// Inflated data would exceed the limit.
            case tooLarge
            /// Not a valid zlib stream.
            case corrupt
        }
        public var kind: Kind
        public var message: String
        public var description: String { self.message }
    }

    /// Payloads smaller than this are sent uncompressed even when compression is asked for:
    /// deflate's overhead outweighs the saving.
    public static let minimumSize = 256

    /// Deflates `input` at a fast level.
    public static func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var output = allocator.buffer(capacity: Int(compressBound(uLong(input.readableBytes))))
        _ = input.withUnsafeReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: output.capacity) { target in
                var destLength = uLong(target.count)
                let rc = compress2(
                    target.baseAddress!.assumingMemoryBound(to: Bytef.self), &destLength,
                    source.baseAddress?.assumingMemoryBound(to: Bytef.self) ?? UnsafePointer(bitPattern: 1)!,
                    uLong(source.count), 1)
                precondition(rc == Z_OK, "compress2 failed with \(rc) despite compressBound")
                return Int(destLength)
            }
        }
        return output
    }

    /// Inflates `input`, refusing to produce more than `limit` bytes (a zip bomb costs
    /// the server at most `limit` bytes of memory).
    public static func decompress(
        _ input: ByteBuffer, limit: Int, allocator: ByteBufferAllocator
    ) throws(PayloadCompression.Error) -> ByteBuffer {
        var stream = z_stream()
        guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Error(kind: .corrupt, message: "zlib inflateInit failed")
        }
        defer { inflateEnd(&stream) }

        var output = allocator.buffer(capacity: min(limit, max(1024, input.readableBytes * 4)))
        var result: Int32 = Z_OK
        input.withUnsafeReadableBytes { source in
            stream.next_in = UnsafeMutablePointer(
                mutating: source.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(source.count)
            while true {
                if output.writableBytes == 0 {
                    if output.capacity >= limit {
                        result = Z_BUF_ERROR
                        return
                    }
                    output.reserveCapacity(min(limit, output.capacity * 2))
                }
                let room = min(output.writableBytes, limit - output.writerIndex)
                if room == 0 {
                    result = Z_BUF_ERROR
                    return
                }
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { target in
                    stream.next_out = target.baseAddress!.assumingMemoryBound(to: Bytef.self)
                    stream.avail_out = uInt(room)
                    result = inflate(&stream, Z_NO_FLUSH)
                    return room - Int(stream.avail_out)
                }
                if result == Z_STREAM_END { return }
                if result != Z_OK { return }
                if stream.avail_in == 0 && stream.avail_out != 0 {
                    result = Z_DATA_ERROR
                    return
                }
            }
        }
        switch result {
        case Z_STREAM_END where stream.avail_in > 0:
            throw Error(
                kind: .corrupt,
                message: "compressed payload has \(stream.avail_in) bytes after the end of its zlib stream")
        case Z_STREAM_END:
            return output
        case Z_BUF_ERROR where output.readableBytes >= limit:
            throw Error(kind: .tooLarge, message: "compressed payload inflates past the \(limit)-byte limit")
        default:
            throw Error(kind: .corrupt, message: "payload is not a valid zlib stream (zlib code \(result))")
        }
    }
}
