"""Signed voice messages per second through the relay, against a bare websockets echo.

N senders each send M ``chat.voice.start`` messages to their own receiver through a relay
process (signed, stored durably, acknowledged, delivered, verified, confirmed). In the
same run, N clients push M messages of the same size through a bare ``websockets`` echo
server process and read them back. Both use the same window of unacknowledged messages
per sender. The ratio relay / echo is one figure to watch.

The other is the SDK's own cost. The run also measures, alone in this process, the pure
cryptography of one message (sign, seal, open, verify: the SDK's JWS, sealed-body and
Olm layers, the same payload, sealed for one recipient device as the SDK does here,
where the sender has no other device), just before and just after the relay run: the
inverse of their mean is the *floor*, messages/s per core.
Against it stands the end-to-end figure per client core: messages over the CPU seconds
this process (all 2N clients) spent in the timed part. The ratio SDK / floor says how
much of the client's time is cryptography; the relay's CPU is printed beside it.

    python benchmarks/relay_throughput.py [--senders 4] [--messages 2000] [--window 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import astuple, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as benchmarks/<name>.py

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.harness import PEER_INFO, UNLIMITED_RELAY_ARGS, Result, placed_voice_pairs
from benchmarks.relay_cluster import process_cpu
from parley.client.olm import OlmDevice
from parley.client.state import MEMORY, State
from parley.credentials import Credentials
from parley.crypto import jws, sealed
from parley.crypto.keys import SigningKey
from parley.ids import new_device_id, new_identity_id
from parley.processes import ChildProcess, RelayProcess
from parley.protocol.messages import VoiceStart


@dataclass
class Cpu:
    """CPU seconds spent during the timed part: this process (the clients), the relay."""

    clients: float = 0.0
    relay: float = 0.0


async def bench_relay(
    senders: int, messages: int, window: int, workdir: Path
) -> tuple[Result, Cpu]:
    cpu = Cpu()
    async with RelayProcess(workdir / "relay", extra_args=UNLIMITED_RELAY_ARGS) as relay:

        @contextlib.asynccontextmanager
        async def metered() -> AsyncIterator[None]:
            clients, relay_cpu = time.process_time(), process_cpu(relay.pid)
            yield
            cpu.clients = time.process_time() - clients
            cpu.relay = process_cpu(relay.pid) - relay_cpu

        result = await placed_voice_pairs(
            "relay",
            [(relay.url, relay.url)] * senders,
            workdir,
            messages=messages,
            window=window,
            around=metered,
        )
    return result, cpu


@dataclass(frozen=True)
class Floor:
    """CPU seconds per message of each cryptographic step, measured alone."""

    sign: float
    seal: float
    open: float
    verify: float

    @classmethod
    def mean(cls, *floors: Floor) -> Floor:
        return cls(*(sum(steps) / len(floors) for steps in zip(*map(astuple, floors), strict=True)))

    @property
    def rate(self) -> float:
        """Messages/s one core could sign, seal, open and verify, doing nothing else."""
        return 1 / (self.sign + self.seal + self.open + self.verify)

    def line(self) -> str:
        steps = "  ".join(f"{name} {seconds * 1e6:5.1f} us" for name, seconds in vars(self).items())
        return f"crypto floor {self.rate:9.1f} msg/s per core  ({steps} per message)"


def _device() -> tuple[Credentials, OlmDevice]:
    creds = Credentials(
        identity=new_identity_id(),
        device=new_device_id(),
        secret_key=SigningKey.generate(),
        relay_url="memory://floor",
    )
    return creds, OlmDevice(creds, State(MEMORY, identity=creds.identity, device=creds.device))


def crypto_floor(messages: int) -> Floor:
    """Sign, seal, open and verify ``messages`` starts as the SDK does, with its own
    primitives, timed in CPU seconds per step: the sender's Olm session with the
    receiver's device starts from a one-time key, and, as in the benchmark, the receiver
    never answers (so every key travels in a pre-key message)."""
    (tx, tx_olm), (rx, rx_olm) = _device(), _device()
    tx_peer, rx_peer = (tx.identity, tx.device), (rx.identity, rx.device)
    one_time_key = rx_olm.one_time_keys(1)[0]
    tx_olm.start_session(rx_peer, rx_olm.identity_key, one_time_key)
    verify_key = tx.secret_key.public_key
    address = f"{rx.identity}:{rx.device}"
    spent = dict.fromkeys(("sign", "seal", "open", "verify"), 0.0)
    clock = time.process_time
    for n in range(messages):
        message = VoiceStart(
            iss=tx.identity,
            sub=rx.identity,
            aud=rx.identity,
            iat=0,
            exp=0,
            jti=os.urandom(16).hex(),
            cid="bench",
            call_id=f"call-{n}",
            peer_info=PEER_INFO,
            data={"n": n},
        )
        began = clock()
        token = jws.sign(message, tx.secret_key, kid=tx.device)
        signed = clock()
        aad = sealed.associated_data(os.urandom(16).hex(), tx.identity, tx.device, rx.identity)
        key, nonce, ciphertext = sealed.encrypt(token, aad)
        olm_message = tx_olm.encrypt(rx_peer, rx_olm.identity_key, key)
        assert olm_message is not None
        body = sealed.encode(
            sealed.SealedBody(
                sender_key=tx_olm.identity_key,
                sender_key_signature=tx_olm.identity_key_signature,
                keys={address: olm_message},
                nonce=nonce,
                ciphertext=ciphertext,
            )
        )
        sealed_at = clock()
        opened = sealed.decode(body)
        mine = opened.keys[address]
        sender_key = opened.sender_key if rx_olm.needs_sender_key(tx_peer, mine) else None
        message_key = rx_olm.decrypt(tx_peer, mine, sender_key)
        payload = sealed.decrypt(message_key, opened.nonce, opened.ciphertext, aad)
        opened_at = clock()
        jws.verify_signature(jws.parse(payload), verify_key)
        verified = clock()
        spent["sign"] += signed - began
        spent["seal"] += sealed_at - signed
        spent["open"] += opened_at - sealed_at
        spent["verify"] += verified - opened_at
    return Floor(**{step: seconds / messages for step, seconds in spent.items()})


async def echo_server(port: int) -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", port, compression=None) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"echo listening on ws://127.0.0.1:{bound}", flush=True)
        await asyncio.Future()


async def bench_echo(senders: int, messages: int, window: int, size: int) -> Result:
    server = ChildProcess(
        [sys.executable, __file__, "--echo-server"],
        re.compile(r"listening on (ws://\S+)"),
        name="echo server",
    )
    match = await server.start()
    url = match.group(1)
    payload = b"x" * size

    async def client() -> None:
        async with connect(url, compression=None) as ws:
            credit = asyncio.Semaphore(window)

            async def reader() -> None:
                for _ in range(messages):
                    await ws.recv()
                    credit.release()

            reading = asyncio.create_task(reader())
            for _ in range(messages):
                await credit.acquire()
                await ws.send(payload)
            await reading

    try:
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(senders)))
        elapsed = time.perf_counter() - start
    finally:
        await server.stop()
    return Result("echo", senders * messages, elapsed)


def signed_size() -> int:
    """Bytes of one benchmark message as the relay sees it, for a fair echo."""
    message = VoiceStart(
        iss="a" * 16,
        sub="b" * 16,
        aud="b" * 16,
        iat=0,
        exp=0,
        jti="j" * 32,
        cid="bench",
        call_id="call-0000",
        peer_info=PEER_INFO,
        data={"n": 0},
    )
    return len(jws.sign(message, SigningKey.generate(), "d-xxxxxxxxxx"))


async def main(args: argparse.Namespace) -> None:
    if args.echo_server:
        await echo_server(0)
        return
    # Measured just before and just after the relay run, so a machine that got busier
    # or quieter in between weighs on both sides alike.
    floor_messages = max(args.messages, 500)
    before = crypto_floor(floor_messages)
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        relay, cpu = await bench_relay(args.senders, args.messages, args.window, Path(tmp))
    floor = Floor.mean(before, crypto_floor(floor_messages))
    echo = await bench_echo(args.senders, args.messages, args.window, size=signed_size())
    sdk = relay.messages / cpu.clients
    print(f"senders={args.senders} messages/sender={args.messages} window={args.window}")
    print(relay.line() + "  (signed, sealed, stored, acked, delivered, opened, verified)")
    print(echo.line() + "  (bare websockets echo, same message count)")
    print(f"ratio relay/echo = {relay.rate / echo.rate:.3f}")
    print(floor.line())
    print(
        f"sdk          {sdk:9.1f} msg/s per client core  (client process {cpu.clients:.2f} "
        f"CPU s, relay process {cpu.relay:.2f} CPU s, over {relay.seconds:.2f} s wall)"
    )
    print(f"ratio sdk/floor = {sdk / floor.rate:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--messages", type=int, default=2000, help="per sender")
    parser.add_argument("--window", type=int, default=32, help="unacknowledged per sender")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    asyncio.run(main(parser.parse_args()))
