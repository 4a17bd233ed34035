public import NIOCore

/// The 8 bytes a client sends first: the magic `IWIR` and the range of protocol
/// versions it speaks, as two big-endian UInt16s (lowest, highest).
public struct Preface: Hashable, Sendable {
    /// `I W I R`.
    public static let magic: [UInt8] = [0x49, 0x57, 0x49, 0x52]
    /// Size of the encoded preface in bytes.
    public static let size = 8
    /// The protocol version this code speaks.
    public static let currentVersion: UInt16 = 1

    public var minVersion: UInt16
    public var maxVersion: UInt16

    public init(minVersion: UInt16 = Preface.currentVersion, maxVersion: UInt16 = Preface.currentVersion) {
        self.minVersion = minVersion
        self.maxVersion = maxVersion
    }

    /// Appends the 8 preface bytes to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeBytes(Self.magic)
        buffer.writeMultipleIntegers(self.minVersion, self.maxVersion)
    }

    /// First bytes of the HTTP requests a misdirected client may send to the port.
    static let httpMethodPrefixes: [[UInt8]] = ["GET ", "POST", "PUT ", "HEAD", "DELE", "OPTI", "PATC", "PRI ", "CONN"]
        .map { Array($0.utf8) }
}
