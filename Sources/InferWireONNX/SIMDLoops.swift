/// Explicit SIMD loops for the hot FP32 elementwise operators: eight lanes at a time,
/// then a scalar tail. Written with Swift's SIMD types so they vectorise whatever the
/// optimiser decides about closures.
enum SIMDLoops {
    typealias Vector = SIMD8<Float>

    @inline(__always)
    static func map(_ x: [Float], _ vector: (Vector) -> Vector, _ scalar: (Float) -> Float) -> [Float] {
        [Float](unsafeUninitializedCapacity: x.count) { out, n in
            x.withUnsafeBufferPointer { p in
                let count = p.count
                guard count > 0 else { return }
                let src = UnsafeRawPointer(p.baseAddress!)
                let dst = UnsafeMutableRawPointer(out.baseAddress!)
                var i = 0
                while i + 8 <= count {
                    let v = src.loadUnaligned(fromByteOffset: i * 4, as: Vector.self)
                    dst.storeBytes(of: vector(v), toByteOffset: i * 4, as: Vector.self)
                    i += 8
                }
                while i < count {
                    out[i] = scalar(p[i])
                    i += 1
                }
            }
            n = x.count
        }
    }

    /// `out[i] = op(a[i], b[i % width])`: equal shapes (width = count) or a row repeated.
    @inline(__always)
    static func zip(
        _ a: [Float], _ b: [Float], width: Int, swapped: Bool,
        _ vector: (Vector, Vector) -> Vector, _ scalar: (Float, Float) -> Float
    ) -> [Float] {
        let total = a.count
        return [Float](unsafeUninitializedCapacity: total) { out, n in
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    guard total > 0, width > 0 else { return }
                    let sa = UnsafeRawPointer(pa.baseAddress!)
                    let sb = UnsafeRawPointer(pb.baseAddress!)
                    let dst = UnsafeMutableRawPointer(out.baseAddress!)
                    var row = 0
                    while row < total {
                        var j = 0
                        while j + 8 <= width {
                            let x = sa.loadUnaligned(fromByteOffset: (row + j) * 4, as: Vector.self)
                            let y = sb.loadUnaligned(fromByteOffset: j * 4, as: Vector.self)
                            dst.storeBytes(
                                of: swapped ? vector(y, x) : vector(x, y), toByteOffset: (row + j) * 4, as: Vector.self)
                            j += 8
                        }
                        while j < width {
                            out[row + j] = swapped ? scalar(pb[j], pa[row + j]) : scalar(pa[row + j], pb[j])
                            j += 1
                        }
                        row += width
                    }
                }
            }
            n = total
        }
    }
}
