import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Words for why a TCP connection could not be made, for people rather than for NIO's
/// debug descriptions (which stay in the error's `cause`).
enum ConnectFailure {
    static func describe(_ error: any Error, timeout: Duration) -> String {
        if let error = error as? NIOConnectionError {
            if error.dnsAError != nil || error.dnsAAAAError != nil, error.connectionErrors.isEmpty {
                return "the host name does not resolve; check the address"
            }
            // Every address tried failed; the first failure speaks for them.
            if let first = error.connectionErrors.first { return self.describe(first.error, timeout: timeout) }
            return "no address to connect to; check the host name"
        }
        if let error = error as? ChannelError, case .connectTimeout = error {
            return "no answer within \(timeout) (is a firewall dropping packets, or the host down?)"
        }
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED:
                return "connection refused: nothing is listening there (is the server running, on that port?)"
            case ETIMEDOUT: return "no answer within \(timeout) (is a firewall dropping packets, or the host down?)"
            case EHOSTUNREACH, ENETUNREACH:
                return "the host is unreachable from here; check the address and the network"
            case EADDRNOTAVAIL: return "the address is not usable from this machine"
            default: break
            }
        }
        return self.describe(error)
    }

    /// Words for why an established connection failed.
    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode)).lowercased()
        }
        if let error = error as? ChannelError {
            switch error {
            case .ioOnClosedChannel, .alreadyClosed, .outputClosed: return "the connection is closed"
            case .eof: return "the server closed the connection"
            default: break
            }
        }
        return "\(error)"
    }
}
