#!/usr/bin/env python3
"""Hostile clients against one gateway node, as an operator would try them; one line per case.

    bench/hostile.py PORT SOCKET_PATH      (run by bench/hostile.sh, which starts the node)

Standard library only: raw TCP, so that nothing in a client library hides what the server does.
"""
import asyncio
import base64
import os
import sys
import time

HOST = "127.0.0.1"
PORT = int(sys.argv[1])
SOCKET_PATH = sys.argv[2]


async def held(send_slowly):
    """Opens a connection, runs `send_slowly(writer)` alongside, returns seconds until the server closed it."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(HOST, PORT)
    task = asyncio.create_task(send_slowly(writer))
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass
    task.cancel()
    writer.close()
    return time.monotonic() - start


async def silent(writer):
    await asyncio.sleep(3600)


async def trickle(writer):
    writer.write(f"GET {SOCKET_PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n".encode())
    for i in range(1000):
        await writer.drain()
        await asyncio.sleep(5)
        writer.write(f"X-Slow-{i}: y\r\n".encode())


async def status_of(request: bytes) -> int:
    reader, writer = await asyncio.open_connection(HOST, PORT)
    writer.write(request)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 else 0


async def health_latency_ms() -> float:
    start = time.monotonic()
    status = await status_of(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200, status
    return (time.monotonic() - start) * 1000


def tally(statuses):
    counts = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{n}x {s}" for s, n in sorted(counts.items()))


async def main():
    # 1. 300 connections that never send a byte and 300 that trickle a header line every 5 s,
    #    while /healthz is probed.
    start = time.monotonic()
    holders = [asyncio.create_task(held(silent)) for _ in range(300)]
    holders += [asyncio.create_task(held(trickle)) for _ in range(300)]
    probes = []
    while not all(h.done() for h in holders) and time.monotonic() - start < 120:
        probes.append(await health_latency_ms())
        await asyncio.sleep(0.25)
    closed = [h.result() for h in holders if h.done()]
    print(
        f"idle+trickling: {len(closed)}/600 closed by the node, after {min(closed):.1f}-{max(closed):.1f} s; "
        f"/healthz meanwhile {len(probes)} probes, max {max(probes):.1f} ms"
    )

    # 2. 3,000 wrong API keys, 50 at a time.
    bad = (
        b"PUT /api/v1/users/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer guess\r\n"
        b"Content-Type: application/json\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{\"username\":\"x\"}"
    )
    start = time.monotonic()
    statuses = []
    for _ in range(60):
        statuses += await asyncio.gather(*[status_of(bad) for _ in range(50)])
    print(f"3000 wrong API keys in {time.monotonic() - start:.1f} s: {tally(statuses)}")

    # 3. 2,000 socket upgrades from one address, as fast as they go.
    def upgrade():
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET {SOCKET_PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    start = time.monotonic()
    statuses = []
    for _ in range(40):
        statuses += await asyncio.gather(*[status_of(upgrade()) for _ in range(50)])
    print(f"2000 socket upgrades from one address in {time.monotonic() - start:.1f} s: {tally(statuses)}")
    await asyncio.sleep(1)
    print(f"/healthz afterwards: {await health_latency_ms():.1f} ms")


asyncio.run(main())
