"""A client for the gateway's sockets (docs/reconnect.md), on asyncio and `websockets`.

One socket at a time whatever the timing; reconnects with exponential backoff and full jitter, or
after the server's retry hint; resumes with ``?since=`` (or, on a socket of several groups such as
Pythia's ``/ws``, with the ``resume`` token its frames carry) so that nothing is missed or delivered
twice; passes its token in the subprotocol and refreshes it before it expires; puts a
``client_message_id`` on every message it sends and resends what may not have gone out after a
reconnect (the gateway answers a resend as the first send and stores it once).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import random
import re
import time
import uuid
from collections import OrderedDict
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets

__all__ = ["RealtimeClient", "retry_hint", "__version__"]
__version__ = "0.1.0"

MESSAGE_TYPES = {"message", "send_message", "direct_message"}
REFUSED_FOR_GOOD = {4001, 4002, 4004}
SEEN_IDS = 2048

TokenProvider = Callable[[], Union[str, Awaitable[str]]]


def retry_hint(reason: str) -> Optional[float]:
    """Seconds to wait from a 1012/1013 close reason's ``retry_after_ms=N``, if it has one."""
    match = re.search(r"retry_after_ms=(\d+)", reason or "")
    return int(match.group(1)) / 1000 if match else None


def _expiry(token: str) -> Optional[int]:
    """A JWT's ``exp``, read without verifying it (the server does)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        exp = json.loads(base64.urlsafe_b64decode(payload)).get("exp")
        return exp if isinstance(exp, int) else None
    except (IndexError, ValueError):
        return None


def _with_resume_point(url: str, since: Optional[int], resume: Optional[str]) -> str:
    """``url`` with ``since`` (a socket of one group) and ``resume`` (one of several; empty asks
    for tokens). A socket of one group ignores ``resume``, one of several ``since``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("since", "resume")]
    if since is not None:
        query.append(("since", str(since)))
    query.append(("resume", resume or ""))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _message_id(frame: dict) -> Optional[str]:
    if isinstance(frame.get("message_id"), str):
        return frame["message_id"]
    data = frame.get("data")
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return data["id"]
    return None


class RealtimeClient:
    """Frames arrive through ``frames()`` (or ``await next_frame()``); send with ``send()``."""

    def __init__(
        self,
        urls: list[str],
        token: TokenProvider,
        *,
        backoff_base: float = 0.25,
        backoff_max: float = 30.0,
        refresh_before: float = 60.0,
        queue_limit: int = 100,
        resend_within: float = 60.0,
    ) -> None:
        self.urls = list(urls)
        self.token = token
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.refresh_before = refresh_before
        self.queue_limit, self.resend_within = queue_limit, resend_within
        #: The last ``seq`` delivered: where the next connection resumes.
        self.last_seq: Optional[int] = None
        #: The last resume token (a socket of several groups): where the next connection resumes.
        self.last_resume: Optional[str] = None
        #: Sockets opened so far (one at a time).
        self.connections = 0
        self._ws: Any = None
        self._task: Optional[asyncio.Task] = None
        self._closed = False
        self._queue: list[dict] = []
        self._sent: list[tuple[float, dict]] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._frames: asyncio.Queue = asyncio.Queue()
        self._open = asyncio.Event()

    def start(self) -> None:
        """Starts the connection (once: calling it again while it runs does nothing)."""
        self._closed = False
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Closes for good: no reconnect."""
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def wait_open(self) -> None:
        await self._open.wait()

    async def next_frame(self) -> dict:
        return await self._frames.get()

    async def frames(self) -> AsyncIterator[dict]:
        while True:
            yield await self._frames.get()

    async def send(self, frame: dict) -> Optional[str]:
        """Sends a frame; a message gets a ``client_message_id`` (returned) and is kept to be
        resent after a reconnect. While disconnected, other frames wait in a small queue."""
        client_id = None
        if frame.get("type") in MESSAGE_TYPES:
            client_id = str(uuid.uuid4())
            if isinstance(frame.get("data"), dict):
                frame = {**frame, "data": {**frame["data"], "client_message_id": client_id}}
            else:
                frame = {**frame, "client_message_id": client_id}
            self._sent.append((time.monotonic(), frame))
        if self._ws is not None and self._open.is_set():
            try:
                await self._ws.send(json.dumps(frame))
                return client_id
            except websockets.ConnectionClosed:
                pass
        if client_id is None:
            self._queue.append(frame)
            del self._queue[: max(0, len(self._queue) - self.queue_limit)]
        return client_id

    async def _token(self) -> str:
        token = self.token()
        return await token if inspect.isawaitable(token) else token

    async def _run(self) -> None:
        attempt, index = 0, 0
        while not self._closed:
            hint = None
            try:
                token = await self._token()
                url = _with_resume_point(self.urls[index % len(self.urls)], self.last_seq, self.last_resume)
                async with websockets.connect(url, subprotocols=["bearer", token], open_timeout=10) as ws:
                    self._ws = ws
                    self.connections += 1
                    attempt = 0
                    self._open.set()
                    await self._flush(ws)
                    refresher = asyncio.get_running_loop().create_task(self._refresh(ws, token))
                    try:
                        async for text in ws:
                            self._receive(text)
                    finally:
                        refresher.cancel()
                hint = None
            except websockets.ConnectionClosed as closed:
                received = closed.rcvd
                if received is not None:
                    if received.code in REFUSED_FOR_GOOD:
                        self._closed = True
                        break
                    hint = retry_hint(received.reason)
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake):
                pass
            finally:
                self._ws = None
                self._open.clear()
            if self._closed:
                break
            index += 1
            ceiling = min(self.backoff_max, self.backoff_base * 2**attempt)
            attempt += 1
            await asyncio.sleep(hint if hint is not None else random.uniform(0, ceiling))

    async def _flush(self, ws) -> None:
        cutoff = time.monotonic() - self.resend_within
        self._sent = [(at, frame) for at, frame in self._sent if at >= cutoff]
        for _, frame in self._sent:
            await ws.send(json.dumps(frame))
        queued, self._queue = self._queue, []
        for frame in queued:
            await ws.send(json.dumps(frame))

    def _receive(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if not isinstance(frame, dict) or frame.get("type") == "token_refreshed":
            return
        if frame.get("type") == "resync_required":
            if isinstance(frame.get("seq"), int):
                self.last_seq = frame["seq"]
            self._frames.put_nowait(frame)
            return
        seq = frame.get("seq")
        if isinstance(frame.get("resume"), str):
            # Several groups, whose numbers do not compare: the server resumes each exactly.
            self.last_resume = frame["resume"]
        elif isinstance(seq, int):
            if self.last_seq is not None and seq <= self.last_seq:
                return
            self.last_seq = seq
        message_id = _message_id(frame)
        if message_id is not None:
            if message_id in self._seen:
                return
            self._seen[message_id] = None
            if len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)
        self._frames.put_nowait(frame)

    async def _refresh(self, ws, token: str) -> None:
        while True:
            exp = _expiry(token)
            if exp is None:
                return
            await asyncio.sleep(max(0.0, exp - time.time() - self.refresh_before))
            token = await self._token()
            await ws.send(json.dumps({"type": "refresh_token", "token": token}))
