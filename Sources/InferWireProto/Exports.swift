// The generated messages' public API mentions SwiftProtobuf types (Message, Data).
@_exported import SwiftProtobuf
