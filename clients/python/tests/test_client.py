"""The Python SDK against real gateway nodes, started by tests/tests/e2e/sdk.rs (which passes the
cluster in the environment and SIGKILLs nothing itself: the last test kills a node)."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import time
import urllib.request

from rtgate_client import RealtimeClient, retry_hint

URLS = os.environ["SOCKET_URLS"].split(" ")
API, KEY, SECRET = os.environ["API_URL"], os.environ["API_KEY"], os.environ["JWT_SECRET"]
CHAT, USER = os.environ["CHAT_ID"], os.environ["USER_ID"]
CHAT_URLS = [f"{u}/api/v1/ws/chat/{CHAT}" for u in URLS]
CHANNELS = os.environ["CHANNEL_IDS"].split(" ")


def b64(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def mint(seconds: int) -> str:
    now = int(time.time())
    head = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': USER, 'iat': now, 'exp': now + seconds})}"
    signature = hmac.new(SECRET.encode(), head.encode(), hashlib.sha256).digest()
    return f"{head}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def api(method: str, path: str, body=None):
    request = urllib.request.Request(
        f"{API}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read() or b"null")


async def publish(event: dict, group: str = f"chat:{CHAT}") -> None:
    status, _ = await asyncio.to_thread(api, "POST", "/api/v1/publish", {"group": group, "event": event})
    assert status == 202


async def history() -> list:
    _, body = await asyncio.to_thread(api, "GET", f"/api/v1/chats/{CHAT}/messages?limit=200")
    return body["messages"]


async def until(what: str, check, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while not await check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.025)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 120))


def test_the_retry_hint_is_read_from_the_close_reason():
    assert retry_hint("Server restarting; retry_after_ms=830; since=12") == 0.83
    assert retry_hint("Client too slow") is None


def test_start_however_often_makes_one_socket():
    async def scenario():
        client = RealtimeClient(CHAT_URLS[1:], lambda: mint(3600))
        for _ in range(5):
            client.start()
        await client.wait_open()
        client.start()
        await asyncio.sleep(0.2)
        assert client.connections == 1
        await client.close()

    run(scenario())


def test_a_resend_after_a_dropped_socket_is_stored_once():
    async def scenario():
        client = RealtimeClient(CHAT_URLS[1:], lambda: mint(3600), backoff_base=0.05)
        client.start()
        await client.wait_open()
        content = f"python once {time.time()}"
        client_id = await client.send({"type": "send_message", "data": {"content": content, "message_type": "text"}})
        assert client_id and len(client_id) == 36
        client._ws.transport.abort()  # the connection drops under the send
        await until("a second socket", lambda: _true(client.connections == 2 and client._open.is_set()))
        after = f"python after {time.time()}"
        await client.send({"type": "send_message", "data": {"content": after, "message_type": "text"}})
        await until("both stored", lambda: _stored(after))
        stored = [m for m in await history() if m["content"] == content]
        assert len(stored) == 1, "one message stored"
        shown = []
        while not client._frames.empty():
            frame = client._frames.get_nowait()
            if frame.get("data", {}).get("content") == content:
                shown.append(frame)
        assert len(shown) == 1, "shown once"
        await client.close()

    run(scenario())


def test_a_pythia_client_resumes_each_of_its_channels_across_a_dropped_socket():
    async def scenario():
        client = RealtimeClient([f"{u}/ws" for u in URLS], lambda: mint(3600), backoff_base=0.05)
        seen = {channel: [] for channel in CHANNELS}

        async def collect():
            async for frame in client.frames():
                if frame.get("type") == "new_message":
                    seen[frame["data"]["channelId"]].append(frame["data"]["content"])

        async def post(n: int) -> None:
            channel = CHANNELS[n % 2]
            await publish({"type": "new_message", "data": {"channelId": channel, "content": f"m{n}"}}, f"channel:{channel}")

        client.start()
        await client.wait_open()
        collector = asyncio.get_running_loop().create_task(collect())
        await post(0)
        await until("the first message", lambda: _true(len(seen[CHANNELS[0]]) == 1))
        assert client.last_resume, "its frames carry a resume token"
        client._ws.transport.abort()  # dropped; messages go on meanwhile and after it is back
        for n in range(1, 41):
            await post(n)
        await until("every message", lambda: _true(sum(len(v) for v in seen.values()) >= 41))
        await asyncio.sleep(0.2)  # a late duplicate would show here
        assert seen[CHANNELS[0]] == [f"m{n}" for n in range(0, 41, 2)], "each once, in order"
        assert seen[CHANNELS[1]] == [f"m{n}" for n in range(1, 41, 2)], "each once, in order"
        assert client.connections >= 2, "it reconnected"
        collector.cancel()
        await client.close()

    run(scenario())


def test_through_a_node_sigkill_mid_stream_every_message_arrives_once_in_order():
    async def scenario():
        client = RealtimeClient(CHAT_URLS, lambda: mint(3600), backoff_base=0.1, backoff_max=1.0)
        client.start()
        await client.wait_open()
        received = []

        async def collect():
            async for frame in client.frames():
                if frame.get("type") == "numbered":
                    received.append(frame["n"])

        collector = asyncio.get_running_loop().create_task(collect())
        total = 300
        for n in range(total):
            await publish({"type": "numbered", "n": n})
            if n == 100:
                await until("100 received", lambda: _true(len(received) >= 100))
                os.kill(int(os.environ["KILL_PID"]), signal.SIGKILL)
        await until("all received", lambda: _true(len(received) >= total), 60)
        assert received == list(range(total))
        assert client.connections >= 2, "it reconnected"
        collector.cancel()
        await client.close()

    run(scenario())


async def _true(value: bool) -> bool:
    return value


async def _stored(content: str) -> bool:
    return any(m["content"] == content for m in await history())
