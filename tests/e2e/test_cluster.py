"""Several ``parley relay`` processes on one PostgreSQL and one Redis: a relay of many
nodes, each party on a node of its own, nodes killed and restarted under load."""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from benchmarks.harness import UNLIMITED_RELAY_ARGS
from tests.e2e.test_security import _until
from tests.proxy.helpers import Party
from tests.redis_server import RedisServer, RedisTarget, redis_for_test
from tests.relay.store.pg import postgres_dsn, postgres_server  # noqa: F401 - fixtures

from parley.client import Client
from parley.client.registration import add_device, register_identity
from parley.credentials import Credentials
from parley.errors import RateLimited
from parley.processes import ChildProcess, RelayProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def redis_target(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisTarget]:
    with redis_for_test(tmp_path / "redis", request.node.name) as target:
        yield target


@dataclass
class Cluster:
    """Relay nodes sharing one store and one bus; node ``n`` keeps its port across
    restarts, so a client's list of URLs stays right."""

    store: str
    bus: str
    tmp: Path
    nodes: list[RelayProcess] = field(default_factory=list)

    def process(self, index: int, port: int = 0) -> RelayProcess:
        return RelayProcess(
            self.tmp / f"node{index}",
            port=port,
            # The chaos stream sends as fast as it can: these tests are about nodes,
            # not request budgets (tests/e2e/test_abuse.py is).
            extra_args=["--store", self.store, "--bus", self.bus, *UNLIMITED_RELAY_ARGS],
        )

    async def start(self, count: int) -> None:
        self.nodes = [self.process(n) for n in range(count)]
        await asyncio.gather(*(node.start() for node in self.nodes))

    async def kill(self, index: int) -> None:
        await self.nodes[index].kill()

    async def restart(self, index: int) -> None:
        node = self.process(index, self.nodes[index].port)
        await node.start()
        self.nodes[index] = node

    def urls(self, *indexes: int) -> str:
        """A relay URL naming these nodes, first to try first."""
        return ",".join(self.nodes[n].url for n in indexes)

    async def register(self, name: str, *nodes: int) -> tuple[Credentials, Path]:
        creds = await register_identity(self.urls(*nodes), name=name)
        path = self.tmp / f"{name}.json"
        creds.save(path)
        return creds, path

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()


def reaching(creds: Credentials, relay_url: str, path: Path) -> Path:
    """``creds`` saved to ``path`` with another relay URL (the same device, other nodes)."""
    Credentials(
        identity=creds.identity,
        device=creds.device,
        secret_key=creds.secret_key,
        relay_url=relay_url,
    ).save(path)
    return path


@pytest.fixture
async def cluster(
    postgres_dsn: str,  # noqa: F811 - the fixture imported above
    redis_target: RedisTarget,
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    nodes = Cluster(postgres_dsn, f"{redis_target.url}?prefix={redis_target.prefix}", tmp_path)
    await nodes.start(3)
    try:
        yield nodes
    finally:
        await nodes.stop()


async def test_a_proxied_call_with_every_party_on_another_node(cluster: Cluster) -> None:
    app, app_path = await cluster.register("app", 2)
    (_, op_path), (_, cu_path) = await cluster.register("op", 0), await cluster.register("cu", 1)
    async with Client.from_credentials(op_path) as op, Client.from_credentials(cu_path) as cu:
        await asyncio.gather(
            op.connections.permit(app.identity), cu.connections.permit(app.identity)
        )
        bind = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parley", "proxy", "bind", "-c", str(app_path), "conv",
            "--operator", op.id, "--customer", cu.id, "--operator-name", "Olga",
        )  # fmt: skip
        assert await bind.wait() == 0
        proxy = ChildProcess(
            [sys.executable, "-m", "parley", "proxy", "-c", str(app_path)],
            re.compile(r"parley proxy ready"),
            name="parley proxy",
        )
        operator, customer = Party(op), Party(cu)
        async with proxy:
            await operator.voice.start(app.identity, "conv", "k1", "offer", {"lifetime": 30})
            start = await customer.next("start")
            assert start["data"]["operator_name"] == "Olga"
            await customer.voice.accept(app.identity, "conv", "k1", "answer")
            assert (await operator.next("accept"))["peer_info"] == "answer"
            await customer.voice.stop(app.identity, "conv", "k1")
            assert (await operator.next("stop")).cid == "conv"


async def test_every_device_on_every_node_receives_and_resumes_elsewhere(
    cluster: Cluster,
) -> None:
    (alice, alice_path), (_, bob_path) = (
        await cluster.register("alice", 0),
        await cluster.register("bob", 2),
    )
    laptop_path = reaching(await add_device(alice), cluster.urls(1), cluster.tmp / "laptop.json")
    got: dict[str, list[str]] = {"phone": [], "laptop": []}

    def device(path: Path, name: str) -> Client:
        client = Client.from_credentials(path)
        client.voice().on_summary(lambda issuer, payload: got[name].append(payload["call_id"]))
        return client

    async with Client.from_credentials(bob_path) as bob:
        async with device(alice_path, "phone") as phone, device(laptop_path, "laptop"):
            await phone.connections.permit(bob.id)
            await bob.voice().summary(alice.identity, "c", "m1")
            await _until(lambda: got["phone"] == ["m1"] and got["laptop"] == ["m1"])
        # Both devices offline: stored; the phone comes back on another node.
        await bob.voice().summary(alice.identity, "c", "m2")
        moved = reaching(alice, cluster.urls(1), cluster.tmp / "phone-elsewhere.json")
        state = alice_path.with_suffix(".state.db")
        phone_again = Client.from_credentials(moved, state_path=state)
        phone_again.voice().on_summary(lambda issuer, p: got["phone"].append(p["call_id"]))
        async with phone_again:
            await _until(lambda: got["phone"] == ["m1", "m2"])


async def test_chaos_nodes_killed_under_load_lose_nothing_and_repeat_nothing(
    cluster: Cluster,
) -> None:
    """A sender streams messages to a receiver while relay nodes are SIGKILLed and
    restarted; both clients fail over between the nodes. Every acknowledged message is
    handled exactly once."""
    total = 3000
    (receiver_creds, receiver_path), (_, sender_path) = (
        await cluster.register("receiver", 1, 0, 2),
        await cluster.register("sender", 2, 1, 0),
    )
    handled: list[int] = []
    acked: list[int] = []
    receiver = Client.from_credentials(receiver_path)
    receiver.voice().on_summary(lambda issuer, p: handled.append(int(p["call_id"])))
    sender = Client.from_credentials(sender_path, ack_timeout=30.0)
    rng = random.Random(7)
    async with receiver, sender:
        await receiver.connections.permit(sender.id)

        async def send_all() -> None:
            window = asyncio.Semaphore(32)

            async def one(n: int) -> None:
                async with window:
                    # The client resends an unacknowledged Send after reconnecting,
                    # with its envelope id (stored once); a refusal for the rate is
                    # not stored, so sending again is safe.
                    for _ in range(50):
                        try:
                            await sender.voice().summary(receiver_creds.identity, "c", str(n))
                        except RateLimited:
                            await asyncio.sleep(0.2)
                            continue
                        acked.append(n)
                        return

            await asyncio.gather(*(one(n) for n in range(total)))

        sending = asyncio.create_task(send_all())
        kills = 0
        while not sending.done() and kills < 4:  # bounded: a few crashes, then let it end
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            victim = rng.randrange(3)
            await cluster.kill(victim)
            kills += 1
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            await cluster.restart(victim)
        await asyncio.wait_for(sending, 180)
        await _until(lambda: set(acked) <= set(handled), timeout=60)
        # A redelivered duplicate would be handled before a message sent now.
        await sender.voice().summary(receiver_creds.identity, "c", str(total))
        await _until(lambda: total in handled, timeout=60)
    assert handled[-1] == total
    handled.pop()
    duplicates = [n for n, count in Counter(handled).items() if count > 1]
    assert kills >= 1
    assert len(acked) == total
    assert duplicates == []
    assert set(handled) == set(acked)


async def test_a_redis_restart_mid_stream_loses_nothing(
    postgres_dsn: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """The bus goes away and comes back empty while messages stream from a sender on
    one node to a receiver on another: nodes re-read the store, delivery resumes."""
    with RedisServer(tmp_path / "redis") as redis_server:
        nodes = Cluster(postgres_dsn, redis_server.url, tmp_path)
        await nodes.start(2)
        try:
            (receiver_creds, receiver_path), (_, sender_path) = (
                await nodes.register("receiver", 1),
                await nodes.register("sender", 0),
            )
            handled: list[int] = []
            receiver = Client.from_credentials(receiver_path)
            receiver.voice().on_summary(lambda issuer, p: handled.append(int(p["call_id"])))
            async with receiver, Client.from_credentials(sender_path) as sender:
                await receiver.connections.permit(sender.id)
                for n in range(600):
                    if n == 200:
                        redis_server.stop(kill=True)
                    if n == 350:
                        await asyncio.to_thread(redis_server.start)
                    await sender.voice().summary(receiver_creds.identity, "c", str(n))
                    if n % 50 == 0:
                        await asyncio.sleep(0.05)
                await _until(lambda: len(handled) >= 600, timeout=60)
            assert handled == list(range(600))  # in order, each once
        finally:
            await nodes.stop()


async def test_presence_and_revocation_across_nodes(cluster: Cluster) -> None:
    (alice, alice_path), (bob, bob_path) = (
        await cluster.register("alice", 0),
        await cluster.register("bob", 1),
    )
    laptop = await add_device(bob)
    laptop_path = reaching(laptop, cluster.urls(2), cluster.tmp / "bob-laptop.json")
    async with Client.from_credentials(alice_path) as watcher:
        async with Client.from_credentials(bob_path) as bob_phone:
            await bob_phone.connections.permit(alice.identity)
            await watcher.presence.watch(bob.identity)
            await _until(lambda: watcher.presence.devices(bob.identity) == {bob.device})
            laptop_client = Client.from_credentials(laptop_path)
            async with laptop_client:
                await _until(
                    lambda: watcher.presence.devices(bob.identity) == {bob.device, laptop.device}
                )
                # Revoked from the phone (node 1): the laptop on node 2 is disconnected.
                await bob_phone.revoke_device(laptop.device)
                await _until(lambda: watcher.presence.devices(bob.identity) == {bob.device})
        await _until(lambda: watcher.presence.devices(bob.identity) == frozenset())


async def test_health_of_a_node_names_its_store_and_bus(cluster: Cluster) -> None:
    def get() -> dict[str, object]:
        with urllib.request.urlopen(cluster.nodes[1].http_url + "/health", timeout=5) as r:
            return dict(json.loads(r.read()))

    report = await asyncio.to_thread(get)
    assert report["status"] == "ok"
    assert report["store"] == "postgresql" and report["bus"] == "redis"
    assert report["store_reachable"] is True and report["bus_reachable"] is True
