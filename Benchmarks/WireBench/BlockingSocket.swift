import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A blocking TCP socket on loopback: the cheapest possible client, so that what
/// the benchmark measures is the server and the kernel, not client machinery.
final class BlockingSocket {
    let fd: Int32

    init(fd: Int32) {
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    static func connect(port: Int) throws -> BlockingSocket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket() failed: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            close(fd)
            throw BenchError("connect to port \(port) failed: errno \(errno)")
        }
        return BlockingSocket(fd: fd)
    }

    func sendAll(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = send(self.fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            guard n > 0 else { throw BenchError("send failed: errno \(errno)") }
            offset += n
        }
    }

    func sendAll(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try self.sendAll($0) }
    }

    /// Reads exactly `count` bytes into `buffer`.
    func receiveExactly(_ count: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        var offset = 0
        while offset < count {
            let n = recv(self.fd, buffer.baseAddress! + offset, count - offset, 0)
            guard n > 0 else { throw BenchError(n == 0 ? "peer closed" : "recv failed: errno \(errno)") }
            offset += n
        }
    }

    /// Reads one InferWire frame (16-byte header + payload); returns its type byte.
    @discardableResult
    func receiveFrame(scratch: UnsafeMutableRawBufferPointer) throws -> UInt8 {
        try self.receiveExactly(16, into: scratch)
        let length = Int(UInt32(bigEndian: scratch.loadUnaligned(as: UInt32.self)))
        let type = scratch[4]
        guard length <= scratch.count else { throw BenchError("frame of \(length) bytes exceeds the scratch buffer") }
        if length > 0 { try self.receiveExactly(length, into: scratch) }
        return type
    }

    deinit { close(self.fd) }
}

/// A thread-per-connection blocking echo server for length-prefixed frames: the floor.
/// It parses the same 16-byte header InferWire does, then writes the frame back unchanged.
final class EchoServer: @unchecked Sendable {
    let port: Int
    private let listenFD: Int32

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> Bool in
                bind(fd, sa, length) == 0 && listen(fd, 64) == 0 && getsockname(fd, sa, &length) == 0
            }
        }
        guard bound else { throw BenchError("echo server bind failed: errno \(errno)") }
        self.listenFD = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        let listenFD = fd
        Thread.detachNewThread {
            while true {
                let client = accept(listenFD, nil, nil)
                guard client >= 0 else { return }
                Thread.detachNewThread { EchoServer.serve(BlockingSocket(fd: client)) }
            }
        }
    }

    private static func serve(_ socket: BlockingSocket) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            do {
                try socket.receiveExactly(16, into: buffer)
                let length = Int(UInt32(bigEndian: buffer.loadUnaligned(as: UInt32.self)))
                try socket.receiveExactly(length, into: UnsafeMutableRawBufferPointer(rebasing: buffer[16...]))
                try socket.sendAll(UnsafeRawBufferPointer(rebasing: buffer[..<(16 + length)]))
            } catch {
                return
            }
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
