/// The release of this code.
public enum InferWireVersion {
    /// Reported in `SERVER_METADATA` and by `inferwire --version`.
    public static let current = "0.1.0"
}
