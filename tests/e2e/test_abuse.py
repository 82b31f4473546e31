"""A relay that strangers reach: floods, clients that stop reading, idle connections.

Every test runs a real ``parley relay`` process; the abusers speak raw frames over real
WebSockets (what an attacker would do), the well-behaved parties use the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.relay.helpers import Identity
from websockets.asyncio.client import ClientConnection, connect

from parley.client import Client
from parley.client.registration import register_identity
from parley.processes import RelayProcess
from parley.protocol import frames
from parley.protocol.frames import ErrorCode

pytestmark = pytest.mark.e2e

WAIT = 30.0


class Raw:
    """One raw connection to the relay, speaking frames by hand."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.challenge: frames.Challenge | None = None

    @classmethod
    async def open(cls, url: str, **kwargs: object) -> Raw:
        raw = cls(await connect(url, max_size=None, **kwargs))  # type: ignore[arg-type]
        challenge = await raw.recv()
        assert isinstance(challenge, frames.Challenge)
        raw.challenge = challenge
        return raw

    @classmethod
    async def online(cls, url: str, ident: Identity, **kwargs: object) -> Raw:
        raw = await cls.open(url, **kwargs)
        assert raw.challenge is not None
        signature = ident.keys["d1"].sign(frames.auth_message(raw.challenge.nonce, ident.id, "d1"))
        await raw.send(frames.Authenticate(identity=ident.id, device="d1", signature=signature))
        assert isinstance(await raw.recv(), frames.Welcome)
        return raw

    async def send(self, frame: frames.Frame) -> None:
        await self.ws.send(frames.encode(frame))

    async def recv(self) -> frames.RelayFrame:
        async with asyncio.timeout(WAIT):
            return frames.decode_relay_frame(await self.ws.recv(decode=False))

    async def close(self) -> None:
        await self.ws.close()


async def register_raw(url: str, *idents: Identity) -> None:
    raw = await Raw.open(url)
    for ref, ident in enumerate(idents):
        await raw.send(frames.Register(ref=ref, entry=ident.genesis))
        assert isinstance(await raw.recv(), frames.Registered)
    await raw.close()


def metric(relay: RelayProcess, name: str, **labels: str) -> float:
    with urllib.request.urlopen(relay.http_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    )
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end closes ``sock`` within WAIT (it sends nothing first)."""
    sock.settimeout(WAIT)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def until(
    predicate: Callable[[], bool], what: str, *, blocking: bool = False, timeout: float = WAIT
) -> None:
    """Wait for ``predicate`` (run in a thread if ``blocking``), at most ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (await asyncio.to_thread(predicate) if blocking else predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def flood(
    raw: Raw, stop: asyncio.Event, outcomes: Counter[str], retry_afters: list[float]
) -> None:
    """Send to oneself as fast as the socket takes it, until ``stop`` (or 20,000)."""
    sent = 0

    async def read() -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await raw.recv()
                if isinstance(frame, frames.Error):
                    outcomes[frame.code.value] += 1
                    if frame.retry_after is not None:
                        retry_afters.append(frame.retry_after)
                else:
                    outcomes[type(frame).__name__] += 1

    reader = asyncio.create_task(read())
    with contextlib.suppress(Exception):
        while not stop.is_set() and sent < 20_000:  # bounded, whatever happens
            await raw.send(
                frames.Send(
                    ref=sent,
                    envelope_id=f"{id(raw)}-{sent}",
                    recipient="flooder",
                    body=b"x" * 64,
                    expires_at=time.time() + 60,
                )
            )
            sent += 1
            if sent % 50 == 0:
                await asyncio.sleep(0)
    await asyncio.sleep(0.5)  # let the last replies in
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader


async def test_one_identity_flooding_from_eight_connections_is_refused_and_others_go_on(
    tmp_path: Path,
) -> None:
    async with RelayProcess(tmp_path / "relay") as relay:
        flooder = Identity.create("flooder")
        await register_raw(relay.url, flooder)
        floods = [await Raw.online(relay.url, flooder) for _ in range(8)]
        outcomes: Counter[str] = Counter()
        retry_afters: list[float] = []
        stop = asyncio.Event()
        flooding = [asyncio.create_task(flood(raw, stop, outcomes, retry_afters)) for raw in floods]
        # Meanwhile four other pairs talk through the same relay, and all get through.
        received: Counter[str] = Counter()
        pairs = []
        for i in range(4):
            caller = await register_identity(relay.url, name=f"caller{i}")
            callee = await register_identity(relay.url, name=f"callee{i}")
            pairs.append((caller, callee))
        async with contextlib.AsyncExitStack() as stack:
            for i, (caller, callee) in enumerate(pairs):
                listener = Client(callee, state_path=tmp_path / f"callee{i}.db")
                listener.voice().on_start(lambda issuer, payload: received.update([issuer]))
                await stack.enter_async_context(listener)
                await listener.connections.permit(caller.identity)
            talkers = [
                await stack.enter_async_context(
                    Client(caller, state_path=tmp_path / f"caller{i}.db", ack_timeout=WAIT)
                )
                for i, (caller, _) in enumerate(pairs)
            ]

            async def talk(client: Client, callee: str) -> None:
                for n in range(20):
                    await client.voice().start(callee, "cid", f"k{n}", "offer", {})

            await asyncio.gather(
                *(
                    talk(client, callee.identity)
                    for client, (_, callee) in zip(talkers, pairs, strict=True)
                )
            )
            await until(lambda: sum(received.values()) >= 80, "the pairs' 80 messages")
        stop.set()
        # A flooder's send may wait on a connection the relay holds back: stop waiting.
        await asyncio.wait(flooding, timeout=1.0)
        for task in flooding:
            task.cancel()
        await asyncio.gather(*flooding, return_exceptions=True)
        for raw in floods:
            raw.ws.transport.abort()
        assert received == Counter({caller.identity: 20 for caller, _ in pairs})
        assert outcomes[ErrorCode.RATE_LIMITED.value] > 0, outcomes
        assert retry_afters and all(r > 0 for r in retry_afters)
        # The flooder's budget is the device's, whichever of its connections it uses:
        # eight connections got no more through than the burst and the rate allow.
        assert metric(relay, "parley_relay_limited_total", limit="device") > 0
        # Four connections of one device at most: the oldest four were closed.
        assert metric(relay, "parley_relay_limited_total", limit="connections") == 4


async def test_clients_that_stop_reading_are_closed_and_cost_bounded_memory(
    tmp_path: Path,
) -> None:
    readers = [Identity.create(f"reader{i}") for i in range(10)]
    sender = Identity.create("sender")
    # The sender is not what is limited here: give it room.
    room = ["--rate", "1e6", "--burst", "1000000", "--identity-rate", "1e6"]
    args = ["--write-timeout", "2", *room, "--identity-burst", "1000000"]
    async with RelayProcess(tmp_path / "relay", extra_args=args) as relay:
        await register_raw(relay.url, sender, *readers)
        for reader in readers:
            raw = await Raw.online(relay.url, reader)
            await raw.send(frames.Permit(ref=1, identity="sender"))
            assert isinstance(await raw.recv(), frames.Done)
            await raw.close()
        # Each reader's socket takes only a little before the relay's writes block.
        stalled = []
        for reader in readers:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", int(relay.url.rsplit(":", 1)[1])))
            stalled.append(await Raw.online(relay.url, reader, sock=sock))
        for raw in stalled:
            raw.ws.transport.pause_reading()  # stop reading: the kernel fills up
        before = rss_bytes(relay.pid)
        peak = before
        body = b"b" * 48_000
        per_reader = 120  # 5.8 MB each: more than the socket buffers hold
        writer = await Raw.online(relay.url, sender)
        acked = 0
        for n in range(per_reader):
            for reader in readers:
                await writer.send(
                    frames.Send(
                        ref=n,
                        envelope_id=f"{reader.id}-{n}",
                        recipient=reader.id,
                        body=body,
                        expires_at=time.time() + 600,
                    )
                )
            for _ in readers:
                assert isinstance(await writer.recv(), frames.Ack)
                acked += 1
            peak = max(peak, rss_bytes(relay.pid))
        assert acked == per_reader * len(readers)
        await until(
            lambda: metric(relay, "parley_relay_limited_total", limit="slow_reader") == 10,
            "the ten stalled readers closed",
            blocking=True,
        )
        peak = max(peak, rss_bytes(relay.pid))
        # 58 MB were sent to readers that read nothing; the relay held at most about
        # 2 MiB each (queued deliveries and one catch-up read: 1 MiB apiece).
        assert peak - before < 40 * 2**20, (before, peak)
        print(f"relay RSS {before / 2**20:.1f} MiB -> peak {peak / 2**20:.1f} MiB")
        for raw in stalled:
            raw.ws.transport.abort()
        # Everything waits in their inboxes: each reader gets all of it on reconnecting.
        for reader in readers:
            again = await Raw.online(relay.url, reader)
            offsets: list[int] = []
            while len(offsets) < per_reader:
                frame = await again.recv()
                if isinstance(frame, frames.Deliver):
                    assert frame.envelope.id == f"{reader.id}-{len(offsets)}"
                    offsets.append(frame.offset)
            await again.send(frames.Confirm(offset=offsets[-1]))
            await again.close()
        await writer.close()


async def test_a_thousand_idle_connections_time_out_while_others_keep_working(
    tmp_path: Path,
) -> None:
    args = ["--auth-timeout", "2"]
    async with RelayProcess(tmp_path / "relay", extra_args=args) as relay:
        port = int(relay.url.rsplit(":", 1)[1])
        # From other loopback addresses (127.0.0.2-...), 30 each: under the per-address
        # cap, so all are let in and must be ended by the handshake timeout.
        idle: list[Raw] = []
        tcp_only: list[socket.socket] = []
        for i in range(1000):
            source = f"127.0.0.{2 + i // 30}"
            if i % 2:
                sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
                tcp_only.append(sock)  # never even says hello
            else:
                sock = socket.socket()
                sock.bind((source, 0))
                sock.connect(("127.0.0.1", port))
                idle.append(await Raw.open(relay.url, sock=sock))
        # Well-behaved users on 127.0.0.1 are not held up.
        alice = await register_identity(relay.url, name="alice")
        bob = await register_identity(relay.url, name="bob")
        got: list[str] = []
        async with (
            Client(alice, state_path=tmp_path / "a.db") as a,
            Client(bob, state_path=tmp_path / "b.db") as b,
        ):
            b.voice().on_start(lambda issuer, payload: got.append(payload["call_id"]))
            await b.connections.permit(alice.identity)
            await a.voice().start(bob.identity, "cid", "k1", "offer", {})
            await until(lambda: bool(got), "alice's start reached bob")
        # Every idle WebSocket is closed by the relay for not authenticating.
        codes = []
        for raw in idle:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(WAIT):
                    await raw.ws.wait_closed()
            codes.append(raw.ws.close_code)
        assert codes == [4008] * len(idle)
        # Bare TCP connections are closed by the WebSocket opening handshake's timeout.
        for sock in tcp_only:
            assert await asyncio.to_thread(closed_by_peer, sock)
            sock.close()
        assert metric(relay, "parley_relay_rejected_total", reason="auth_timeout") == len(idle)
