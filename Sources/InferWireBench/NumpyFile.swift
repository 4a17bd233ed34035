import Foundation
public import InferWireCore
package import InferWireProto

/// Reads `.npy` files (NumPy's own array format, versions 1–3) into tensors.
///
/// The header is a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (1, 32), }`; little-endian numeric
/// and bool arrays in C order are accepted. The element count is checked against the file
/// size before anything is copied.
public enum NumpyFile {
    public static func tensor(name: String, contents: Data) throws(InferWireError) -> Tensor {
        func bad(_ text: String) -> InferWireError {
            InferWireError(code: .invalidArgument, message: "\(name): not a usable .npy file: \(text)")
        }
        let bytes = [UInt8](contents)
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else {
            throw bad("no \\x93NUMPY magic")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw bad("truncated header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw bad("format version \(major) is not supported")
        }
        guard headerLength <= bytes.count - headerStart else { throw bad("truncated header") }
        guard
            let header = String(
                bytes: bytes[headerStart..<headerStart + headerLength], encoding: major == 3 ? .utf8 : .isoLatin1)
        else {
            throw bad("unreadable header")
        }
        guard let descr = value(of: "descr", in: header)?.trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
        else { throw bad("no descr") }
        let fortran = value(of: "fortran_order", in: header) == "True"
        guard let shapeText = value(of: "shape", in: header), shapeText.hasPrefix("("), shapeText.hasSuffix(")") else {
            throw bad("no shape")
        }
        var shape: [Int] = []
        for part in shapeText.dropFirst().dropLast().split(separator: ",") {
            let trimmed = part.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let dim = Int(trimmed), dim >= 0 else { throw bad("shape \(shapeText)") }
            shape.append(dim)
        }
        if fortran && shape.filter({ $0 > 1 }).count > 1 {
            throw bad("Fortran-order arrays are not supported; save with np.ascontiguousarray")
        }

        let types: [String: (DataType, Int)] = [
            "<f4": (.fp32, 4), "<f8": (.fp64, 8), "<f2": (.fp16, 2), "<i8": (.int64, 8), "<i4": (.int32, 4),
            "<i2": (.int16, 2),
            "|i1": (.int8, 1), "|u1": (.uint8, 1), "|b1": (.bool, 1),
        ]
        guard let (dataType, size) = types[descr] else {
            throw bad(
                "dtype '\(descr)' is not supported (little-endian float16/32/64, int8/16/32/64, uint8 and bool are)")
        }
        let available = bytes.count - headerStart - headerLength
        guard let count = Tensor.elementCount(of: shape), count <= available / size else {
            throw bad("shape \(shape) needs more than the \(available) data bytes in the file")
        }
        guard count * size == available else {
            throw bad("shape \(shape) of \(descr) is \(count * size) bytes, the file holds \(available)")
        }
        let start = headerStart + headerLength
        return Tensor(name: name, dataType: dataType, shape: shape, data: Data(bytes[start..<start + available]))
    }

    /// The text after `'key':` up to the next top-level comma (a tuple counts as one value).
    private static func value(of key: String, in header: String) -> String? {
        guard let keyRange = header.range(of: "'\(key)'") ?? header.range(of: "\"\(key)\""),
            let colon = header[keyRange.upperBound...].firstIndex(of: ":")
        else { return nil }
        var depth = 0
        var end = header.endIndex
        var index = header.index(after: colon)
        while index < header.endIndex {
            let c = header[index]
            if c == "(" {
                depth += 1
            } else if c == ")" {
                depth -= 1
            } else if (c == "," || c == "}") && depth == 0 {
                end = index
                break
            }
            index = header.index(after: index)
        }
        return header[header.index(after: colon)..<end].trimmingCharacters(in: .whitespaces)
    }
}
