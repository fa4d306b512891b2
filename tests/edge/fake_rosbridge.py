"""A test double of a rosbridge v2 server, for the client tests of `robota.edge.ros`.

It speaks just enough of the protocol for the client. It records every operation a client
sends, publishes messages to every connected client, replies to service calls, and can drop all
connections to test reconnects. It listens on 127.0.0.1 on a free port, in its own thread with
its own asyncio loop. It is not a ROS bridge; the end-to-end test against the twin's endpoint
(`robota sim serve`) is separate.

The websocket side (RFC 6455: handshake, unfragmented text frames, ping, close) is written out
here on asyncio streams. Autobahn would bind the process to asyncio through txaio, and roslibpy's
default transport needs it bound to Twisted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

START_TIMEOUT_S = 10.0


class FakeRosbridgeServer:
    """A rosbridge v2 test double; use as a context manager, it stops its thread on exit."""

    def __init__(self):
        self.received: list[dict[str, Any]] = []
        self.service_responses: dict[str, dict[str, Any]] = {}
        self._clients: set[asyncio.StreamWriter] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-rosbridge", daemon=True)
        self.port = 0

    def __enter__(self) -> FakeRosbridgeServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=START_TIMEOUT_S)
        return self

    def __exit__(self, *exc_info) -> None:
        async def shutdown() -> None:
            self._server.close()
            for client in list(self._clients):
                client.transport.abort()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=START_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _handshake(reader, writer)
            self._clients.add(writer)
            while True:
                opcode, payload = await _read_frame(reader)
                if opcode == 0x8:  # close
                    writer.write(_frame(0x8, payload[:2]))
                    break
                if opcode == 0x9:  # ping
                    writer.write(_frame(0xA, payload))
                elif opcode == 0x1:
                    self._handle(writer, json.loads(payload.decode("utf-8")))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(writer)
            writer.transport.abort()

    def _handle(self, client: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(message)
        if message.get("op") == "call_service":
            service = message["service"]
            values = self.service_responses.get(service, {"success": True, "message": ""})
            reply = {
                "op": "service_response",
                "service": service,
                "id": message.get("id"),
                "values": values,
                "result": True,
            }
            client.write(_frame(0x1, json.dumps(reply).encode("utf-8")))

    def ops(self, op: str, topic: str | None = None) -> list[dict[str, Any]]:
        """Return received operations of one kind, optionally for one topic."""
        with self._lock:
            return [m for m in self.received if m.get("op") == op and topic in (None, m.get("topic"))]

    def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Send a message on `topic` to every connected client."""
        frame = _frame(0x1, json.dumps({"op": "publish", "topic": topic, "msg": message}).encode())

        def send() -> None:
            for client in list(self._clients):
                client.write(frame)

        self._loop.call_soon_threadsafe(send)

    def drop_clients(self) -> None:
        """Close every client connection at once, as a crashed bridge would."""
        def drop() -> None:
            for client in list(self._clients):
                client.transport.abort()

        self._loop.call_soon_threadsafe(drop)

    @property
    def client_count(self) -> int:
        return len(self._clients)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` every 20 ms; raise AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readuntil(b"\r\n\r\n")
    headers = {}
    for line in request.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    accept = base64.b64encode(
        hashlib.sha1((headers["sec-websocket-key"] + _WEBSOCKET_GUID).encode()).digest()
    ).decode()
    writer.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    await writer.drain()


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one unfragmented, masked client frame and return its opcode and payload."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    payload = bytearray(await reader.readexactly(length))
    for i in range(length):
        payload[i] ^= mask[i % 4]
    return first & 0x0F, bytes(payload)


def _frame(opcode: int, payload: bytes) -> bytes:
    """Build one unmasked server frame."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload
