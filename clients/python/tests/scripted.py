"""A stand-in server that plays a script, for the reconnection cases a real server shows only by chance.

A REQUEST the real server reads after its GOAWAY (answered ERROR ``UNAVAILABLE``), a
connection that ends with a request in flight, a call queued behind the concurrency
limit when GOAWAY arrives: each needs the server to act at one exact moment. Here each
accepted connection runs ``script(number, peer)`` (``number`` counts connections from 0)
in a thread of its own, speaking PROTOCOL.md's frames over a real socket.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, List, Optional, Tuple

from google.protobuf.message import Message

from inferwire import _wire
from inferwire._proto import frames_pb2, inference_pb2, status_pb2

Frame = Tuple[int, int, int, int, bytes]


class Peer:
    """The server's side of one connection."""

    def __init__(self, server: "ScriptedServer", number: int, sock: socket.socket) -> None:
        self.server = server
        self.number = number
        self.sock = sock
        self.reader = sock.makefile("rb")

    def handshake(self, max_concurrent_requests: int = 0) -> None:
        """Read the preface and answer HELLO."""
        preface = self.reader.read(len(_wire.PREFACE))
        assert preface == _wire.PREFACE, preface
        hello = frames_pb2.Hello(
            version=1, max_frame_size=1 << 20, max_concurrent_requests=max_concurrent_requests,
            server_name="scripted", server_version="0",
        )
        self.send(_wire.HELLO, hello)

    def read_frame(self) -> Optional[Frame]:
        header = self.reader.read(_wire.HEADER_SIZE)
        if len(header) < _wire.HEADER_SIZE:
            return None
        length, frame_type, flags, method, request_id, _ = _wire.HEADER.unpack(header)
        return frame_type, flags, method, request_id, self.reader.read(length)

    def read_request(self) -> Tuple[int, int]:
        """The next REQUEST's method and id (other frames are skipped); recorded in ``server.requests``."""
        while True:
            frame = self.read_frame()
            assert frame is not None, "the client closed the connection instead of sending a request"
            frame_type, _, method, request_id, _ = frame
            if frame_type == _wire.REQUEST:
                with self.server.lock:
                    self.server.requests.append((self.number, method))
                return method, request_id

    def send(self, frame_type: int, message: Optional[Message] = None, *, method: int = 0, request_id: int = 0) -> None:
        payload = message.SerializeToString() if message is not None else b""
        self.sock.sendall(_wire.encode_frame(frame_type, payload, method=method, request_id=request_id))

    def goaway(self, message: str, code: int = status_pb2.UNAVAILABLE) -> None:
        self.send(_wire.GOAWAY, frames_pb2.GoAway(code=code, message=message))

    def error(self, method: int, request_id: int, message: str, code: int = status_pb2.UNAVAILABLE) -> None:
        status = status_pb2.Status(code=code, message=message)
        self.send(_wire.ERROR, status, method=method, request_id=request_id)

    def answer_live(self, method: int, request_id: int) -> None:
        self.send(_wire.RESPONSE, inference_pb2.ServerLiveResponse(live=True), method=method, request_id=request_id)

    def answer(self, method: int, request_id: int) -> None:
        """SERVER_LIVE: live; any other method: an empty RESPONSE (every response message's defaults)."""
        if method == frames_pb2.SERVER_LIVE:
            self.answer_live(method, request_id)
        else:
            self.send(_wire.RESPONSE, method=method, request_id=request_id)

    def serve_live(self) -> None:
        """Answer SERVER_LIVE requests until the client closes the connection."""
        self.serve(self.answer_live)

    def serve(self, answer: Optional[Callable[[int, int], None]] = None) -> None:
        """Answer requests with ``answer(method, request_id)`` (default ``self.answer``) until the client
        closes the connection."""
        answer = answer or self.answer
        while True:
            frame = self.read_frame()
            if frame is None:
                return
            frame_type, _, method, request_id, _ = frame
            if frame_type == _wire.REQUEST:
                with self.server.lock:
                    self.server.requests.append((self.number, method))
                answer(method, request_id)

    def end(self) -> None:
        """Shut the connection: FIN, then whatever the client still sends is discarded."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.reader.close()
        self.sock.close()


class ScriptedServer:
    """Listens on 127.0.0.1; runs ``script(number, peer)`` for each connection it accepts."""

    def __init__(self, script: Callable[[int, Peer], None]) -> None:
        self.script = script
        self.lock = threading.Lock()
        #: (connection number, method) of every REQUEST read, in order.
        self.requests: List[Tuple[int, int]] = []
        self.failures: List[BaseException] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.threads: List[threading.Thread] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        number = 0
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._run, args=(number, sock), daemon=True)
            self.threads.append(thread)
            thread.start()
            number += 1

    def _run(self, number: int, sock: socket.socket) -> None:
        peer = Peer(self, number, sock)
        try:
            self.script(number, peer)
        except BaseException as exc:  # noqa: BLE001 -- reported by close()
            self.failures.append(exc)
        finally:
            peer.end()

    @property
    def connections(self) -> int:
        return len(self.threads)

    def close(self) -> None:
        """Stop listening, wait for the scripts, and raise the first one's failure."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(), which close() alone does not
        except OSError:
            pass
        self.listener.close()
        self.accepting.join(timeout=10)
        assert not self.accepting.is_alive()
        for thread in self.threads:
            thread.join(timeout=10)
        if self.failures:
            raise self.failures[0]
