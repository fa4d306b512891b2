"""One rosbridge client of the software-in-the-loop endpoint: its subscriptions and send queue.

Each websocket connection gets a `Connection`. Published messages pass through its `Outbox`,
which keeps at most `queue_length` unsent messages per topic and drops the oldest beyond that,
so a slow client receives fresh images instead of an ever longer backlog. Service responses and
status messages are never dropped, and every message leaves in the order it was queued.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
from typing import Any

from robota.errors import MissingExtraError
from robota.sim.sil_messages import BridgeMessageError

try:
    from websockets.asyncio.server import ServerConnection
    from websockets.exceptions import ConnectionClosed
except ImportError as error:
    raise MissingExtraError("websockets", "sim") from error

logger = logging.getLogger(__name__)

# rosbridge's status levels, least to most verbose. A client sees status messages up to the
# level it sets with the `set_level` op; rosbridge's default is "error".
STATUS_LEVELS = ("none", "error", "warning", "info")
DEFAULT_STATUS_LEVEL = "error"

# A client that stops reading while it keeps sending requests is closed once this many
# responses wait unsent, so one client cannot grow the server's memory without bound.
MAX_PENDING_RESPONSES = 1000


class OutboxFullError(Exception):
    """The client reads too slowly for the responses that it requests."""


class _Entry:
    __slots__ = ("text", "topic", "dropped")

    def __init__(self, text: str, topic: str | None):
        self.text = text
        self.topic = topic
        self.dropped = False


class Outbox:
    """First-in first-out send queue that drops a topic's oldest unsent messages past a limit."""

    def __init__(self) -> None:
        self._entries: collections.deque[_Entry] = collections.deque()
        self._pending_by_topic: dict[str, collections.deque[_Entry]] = {}
        self._pending_responses = 0
        self._live = 0
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, text: str, topic: str | None = None, queue_length: int = 1) -> None:
        """Queue one text frame.

        Args:
            text: The JSON text to send.
            topic: The topic of a published message; None for a response or status message,
                which is never dropped.
            queue_length: How many unsent messages of `topic` to keep, at least one.

        Raises:
            OutboxFullError: More than `MAX_PENDING_RESPONSES` responses wait unsent.
        """
        entry = _Entry(text, topic)
        if topic is None:
            self._pending_responses += 1
            if self._pending_responses > MAX_PENDING_RESPONSES:
                raise OutboxFullError(f"{self._pending_responses} responses wait unsent")
        else:
            pending = self._pending_by_topic.setdefault(topic, collections.deque())
            while len(pending) >= max(queue_length, 1):
                pending.popleft().dropped = True
                self._live -= 1
                self.dropped += 1
            pending.append(entry)
        self._entries.append(entry)
        self._live += 1
        if len(self._entries) > 2 * self._live + 64:
            self._entries = collections.deque(e for e in self._entries if not e.dropped)
        self._ready.set()

    async def get(self) -> str:
        """Wait for and return the oldest text that was not dropped."""
        while True:
            while self._entries:
                entry = self._entries.popleft()
                if entry.dropped:
                    continue
                # Entries leave in queue order, so this is the oldest pending one of its topic.
                if entry.topic is None:
                    self._pending_responses -= 1
                else:
                    self._pending_by_topic[entry.topic].popleft()
                self._live -= 1
                return entry.text
            self._ready.clear()
            await self._ready.wait()


@dataclasses.dataclass(frozen=True)
class Subscription:
    """One `subscribe` request: the minimum interval between messages and the queue length."""

    throttle_s: float
    queue_length: int


class Connection:
    """State of one websocket client: subscriptions, advertisements, status level and outbox.

    Args:
        websocket: The client's connection.
        connection_id: Number that log lines use to name this client.
    """

    def __init__(self, websocket: ServerConnection, connection_id: int):
        self.websocket = websocket
        self.id = connection_id
        self.outbox = Outbox()
        self.status_level = DEFAULT_STATUS_LEVEL
        self.advertised: dict[str, str] = {}
        self._subscriptions: dict[str, dict[Any, Subscription]] = {}
        self._last_queued_s: dict[str, float] = {}
        self.errors = 0

    def subscribe(self, topic: str, request_id: Any, subscription: Subscription) -> None:
        """Add a subscription; several ids on one topic share its messages."""
        self._subscriptions.setdefault(topic, {})[request_id] = subscription

    def unsubscribe(self, topic: str, request_id: Any) -> bool:
        """Remove the subscription with this id, or all on `topic` for id None.

        Returns:
            Whether a subscription was removed.
        """
        subscriptions = self._subscriptions.get(topic)
        if not subscriptions:
            return False
        if request_id is None:
            subscriptions.clear()
        elif subscriptions.pop(request_id, None) is None:
            return False
        if not subscriptions:
            del self._subscriptions[topic]
            self._last_queued_s.pop(topic, None)
        return True

    def is_subscribed(self, topic: str) -> bool:
        """Return whether any subscription of this client is on `topic`."""
        return topic in self._subscriptions

    def wants(self, topic: str, now_s: float) -> bool:
        """Return whether a message on `topic` now would pass the subscription's throttle."""
        subscriptions = self._subscriptions.get(topic)
        if not subscriptions:
            return False
        throttle_s = min(s.throttle_s for s in subscriptions.values())
        last_s = self._last_queued_s.get(topic)
        return last_s is None or now_s - last_s >= throttle_s

    def offer(self, topic: str, text: str, now_s: float, *, force: bool = False) -> bool:
        """Queue a published message if the client subscribes and the throttle allows it.

        Args:
            topic: The message's topic.
            text: The `publish` operation as JSON text.
            now_s: The current `time.monotonic()`.
            force: Bypass the throttle, for the latest message sent on subscribing.

        Returns:
            Whether the message was queued.
        """
        if not (self.wants(topic, now_s) or (force and self.is_subscribed(topic))):
            return False
        queue_length = max(s.queue_length for s in self._subscriptions[topic].values())
        self.outbox.put(text, topic, queue_length)
        self._last_queued_s[topic] = now_s
        return True

    def send(self, operation: dict[str, Any]) -> None:
        """Queue a response or status operation, which is never dropped."""
        self.outbox.put(json.dumps(operation, ensure_ascii=False, separators=(",", ":")))

    def status(self, level: str, message: str, request_id: Any = None) -> None:
        """Queue a rosbridge `status` message if the client's status level shows `level`."""
        if STATUS_LEVELS.index(level) > STATUS_LEVELS.index(self.status_level):
            return
        operation: dict[str, Any] = {"op": "status", "level": level, "msg": message}
        if request_id is not None:
            operation["id"] = request_id
        self.send(operation)

    def set_status_level(self, level: Any) -> None:
        """Set the most verbose status level the client receives.

        Raises:
            BridgeMessageError: `level` is not a rosbridge status level.
        """
        if level not in STATUS_LEVELS:
            raise BridgeMessageError(
                f"invalid status level {level!r}; expected one of {', '.join(STATUS_LEVELS)}"
            )
        self.status_level = level

    async def run_sender(self) -> None:
        """Send queued frames in order until the connection closes."""
        try:
            while True:
                await self.websocket.send(await self.outbox.get())
        except ConnectionClosed:
            logger.debug("client %d: connection closed while sending", self.id)
