import Foundation
import InferWireCore
public import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// A swift-log handler that writes one JSON object per line: `time` (RFC 3339, UTC,
/// milliseconds), `level`, `label`, `message`, then the metadata as top-level keys (nested
/// values as arrays and objects). Metadata named like one of the fixed keys is written as
/// `metadata.<key>`, so a line never holds a key twice.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let output: JSONLogOutput

    /// A handler writing to standard error.
    public static func standardError(label: String) -> JSONLogHandler {
        JSONLogHandler(label: label, output: .standardError)
    }

    public init(label: String, output: JSONLogOutput) {
        self.label = label
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = self.metadata
        if let provided = self.metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let metadata = event.metadata { merged.merge(metadata) { _, new in new } }
        self.output.write(
            Self.line(
                time: Date(), level: event.level, label: self.label, message: "\(event.message)", metadata: merged))
    }

    static let fixedKeys: Set<String> = ["time", "level", "label", "message"]

    /// The JSON line (with its newline) for one event.
    static func line(
        time: Date, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata
    ) -> String {
        var text = "{\"time\":\"\(JSONText.timestamp(time))\",\"level\":\"\(level.rawValue)\",\"label\":"
        JSONText.appendString(label, to: &text)
        text += ",\"message\":"
        JSONText.appendString(message, to: &text)
        for key in metadata.keys.sorted() {
            text += ","
            JSONText.appendString(Self.fixedKeys.contains(key) ? "metadata." + key : key, to: &text)
            text += ":"
            Self.append(metadata[key]!, to: &text)
        }
        return text + "}\n"
    }

    private static func append(_ value: Logger.MetadataValue, to text: inout String) {
        switch value {
        case .string(let string): JSONText.appendString(string, to: &text)
        case .stringConvertible(let convertible): JSONText.appendString(convertible.description, to: &text)
        case .array(let values):
            text += "["
            for (index, value) in values.enumerated() {
                if index > 0 { text += "," }
                Self.append(value, to: &text)
            }
            text += "]"
        case .dictionary(let dictionary):
            text += "{"
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { text += "," }
                JSONText.appendString(key, to: &text)
                text += ":"
                Self.append(dictionary[key]!, to: &text)
            }
            text += "}"
        }
    }
}

/// Where JSON log lines go: whole lines, one write each, under a lock, so lines from
/// different threads never interleave.
public final class JSONLogOutput: Sendable {
    private let descriptor: Int32
    private let lock = NSLock()

    public static let standardError = JSONLogOutput(descriptor: 2)

    /// Lines written to an open file descriptor (not closed by this object).
    public init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    func write(_ line: String) {
        var line = line
        line.withUTF8 { bytes in
            self.lock.withLock {
                var offset = 0
                while offset < bytes.count {
                    let written = Glibc.write(self.descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                    if written <= 0 {
                        if written < 0 && errno == EINTR { continue }
                        return
                    }
                    offset += written
                }
            }
        }
    }
}
