import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The process's open-file limit, which bounds how many connections can be accepted.
///
/// A server that reaches it cannot accept (EMFILE) and cannot even refuse: the kernel keeps
/// the connection pending, the listening socket stays readable, and the accept loop spins.
/// So the connection limit is kept below it, with descriptors left for everything else, and
/// a connection over the limit is accepted, told why, and closed.
enum OpenFileLimit {
    /// Raises the soft limit to the hard limit, as servers commonly do, and returns the soft
    /// limit now in force; nil where it cannot be read.
    static func raiseToHardLimit() -> Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return limit.rlim_cur == rlim_t.max ? Int.max : Int(clamping: limit.rlim_cur)
    }

    /// Descriptors open now (event loops, the listening socket, logs); nil where they
    /// cannot be counted.
    static func openDescriptors() -> Int? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return nil }
        return entries.count
    }

    /// The most connections a limit of `openFiles` descriptors leaves room for, with `inUse`
    /// already open and a margin (an eighth of the limit, at most 64) kept for model files,
    /// the state file and whatever else opens later.
    static func connectionCeiling(openFiles: Int, inUse: Int) -> Int {
        guard openFiles < Int.max else { return Int.max }
        return max(1, openFiles - inUse - min(64, openFiles / 8))
    }
}
