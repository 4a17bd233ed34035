import NIOCore
import NIOPosix
import NIOSSL

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

    /// Words for a failed TLS handshake, naming the likely cause; nil when `error` is not one.
    static func describeTLS(_ error: any Error) -> String? {
        if let error = error as? NIOSSLExtraError {
            if error == .failedToValidateHostname {
                return "TLS handshake failed: the server's certificate is not for this host: \(error)"
            }
            return "TLS handshake failed: \(error)"
        }
        let detail: String
        if let error = error as? NIOSSLError {
            switch error {
            case .handshakeFailed(let cause): detail = "\(cause)"
            case .uncleanShutdown:
                return "TLS handshake failed: the server closed the connection during the handshake"
            default: detail = "\(error)"
            }
        } else if let error = error as? BoringSSLError {
            // With TLS 1.3 the server judges the client's certificate after the client finished
            // its handshake: the refusal arrives as the first record read.
            detail = "\(error)"
        } else {
            return nil
        }
        let upper = detail.uppercased()
        if upper.contains("CERTIFICATE_REQUIRED") {
            return "TLS handshake failed: the server requires a client certificate (mutual TLS)"
        }
        if upper.contains("ALERT_UNKNOWN_CA") || upper.contains("ALERT_BAD_CERTIFICATE")
            || upper.contains("ALERT_CERTIFICATE_")
        {
            return "TLS handshake failed: the server did not accept the client certificate: \(detail)"
        }
        if upper.contains("WRONG_VERSION_NUMBER") || upper.contains("UNEXPECTED_RECORD")
            || upper.contains("PACKET_LENGTH_TOO_LONG") || upper.contains("UNKNOWN_PROTOCOL")
        {
            return "TLS handshake failed: the server does not speak TLS on this port (connect without TLS?)"
        }
        if upper.contains("CERTIFICATE_VERIFY_FAILED") {
            return
                "TLS handshake failed: the server's certificate does not verify (untrusted CA, expired, or not for this host): \(detail)"
        }
        if upper.contains("HANDSHAKE_FAILURE") {
            return "TLS handshake failed: the server refused the handshake: \(detail)"
        }
        return "TLS handshake failed: \(detail)"
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
