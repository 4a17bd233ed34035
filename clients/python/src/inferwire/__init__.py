"""InferWire Python client: numpy in, numpy out, over InferWire's framed TCP protocol.

>>> import numpy as np, inferwire
>>> with inferwire.Client("127.0.0.1", 8000) as client:
...     result = client.infer("add_sub", {"INPUT0": np.ones((1, 4), np.float32),
...                                       "INPUT1": np.ones((1, 4), np.float32)})
...     result["OUTPUT0"]

``inferwire.BalancedClient`` (and ``inferwire.aio.BalancedClient``, also named
``inferwire.AsyncBalancedClient``) spread calls over a fleet of servers.
"""

from ._api import InferResult, Principal
from ._proto.inference_pb2 import Priority
from ._proto.management_pb2 import VersionState
from ._proto.status_pb2 import StatusCode
from ._proto.tensor_pb2 import DataType
from ._balance import EndpointStatus
from .aio import AsyncClient
from .aio import BalancedClient as AsyncBalancedClient
from .client import BalancedClient, Client
from .errors import (
    AbortedError,
    AlreadyExistsError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InferWireError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ProtocolError,
    RequestCancelledError,
    ResourceExhaustedError,
    TLSHandshakeError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    error_for,
)
from .tensors import from_tensor, to_tensor

__version__ = "0.1.0"

__all__ = [
    "Client",
    "AsyncClient",
    "BalancedClient",
    "AsyncBalancedClient",
    "EndpointStatus",
    "InferResult",
    "Principal",
    "Priority",
    "VersionState",
    "StatusCode",
    "DataType",
    "from_tensor",
    "to_tensor",
    # Listed by name (not spliced in from errors.__all__) so type checkers see them.
    "InferWireError",
    "RequestCancelledError",
    "UnknownError",
    "InvalidArgumentError",
    "DeadlineExceededError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "AbortedError",
    "OutOfRangeError",
    "UnimplementedError",
    "InternalError",
    "UnavailableError",
    "DataLossError",
    "UnauthenticatedError",
    "ProtocolError",
    "TLSHandshakeError",
    "error_for",
]
