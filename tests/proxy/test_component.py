"""CallProxy on real clients and the relay core (in memory): forwarding, records, bindings
from the store, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.client.helpers import World, eventually
from tests.proxy.helpers import Party

from parley.client import Client
from parley.credentials import Credentials
from parley.errors import UnknownIdentity
from parley.protocol.call import EndReason
from parley.protocol.proxy import Binding, ProxyConfig
from parley.proxy import CallProxy, Leg, LegRecord, Route, SqliteProxyStore


class Setup:
    def __init__(self, world: World, tmp_path: Path) -> None:
        self.world = world
        self.tmp_path = tmp_path
        self.store_path = tmp_path / "proxy.db"
        self.legs: list[LegRecord] = []
        self.routes: list[Route] = []

    async def parties(self, app: Credentials, *names: str) -> list[Party]:
        found = []
        for name in names:
            creds = await self.world.identity(name)
            await self.world.permit(creds, app)
            found.append(Party(await self.world.connected(creds)))
        return found

    def proxy(self, app: Credentials, store: SqliteProxyStore) -> CallProxy:
        client = Client(app, state_path=self.world.state_path(app), connector=self.world.link)
        return CallProxy(
            client,
            store,
            ProxyConfig(ring_lifetime=30, grace=1),
            on_leg=self.legs.append,
            on_route=self.routes.append,
            poll_interval=0.05,
        )


@pytest.fixture
def setup(world: World, tmp_path: Path) -> Setup:
    return Setup(world, tmp_path)


async def test_accept_and_hangup_are_forwarded_and_both_legs_recorded(setup: Setup) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store = SqliteProxyStore(setup.store_path)
    async with setup.proxy(app, store) as proxy:
        await proxy.bind("conv", operator=operator.id, customer=customer.id, operator_name="Olga")
        await operator.voice.start(app.identity, "conv", "k1", "offer", {})
        issuer, ring = await customer.got.next()
        assert (issuer, ring.cid, ring["call_id"], ring["peer_info"]) == (
            app.identity,
            "conv",
            "k1",
            "offer",
        )
        assert ring["data"]["operator_name"] == "Olga"
        await customer.voice.accept(app.identity, "conv", "k1", "answer")
        _, accepted = await operator.got.next()
        assert (accepted.typ.value, accepted["peer_info"]) == ("chat.voice.accept", "answer")
        await operator.voice.stop(app.identity, "conv", "k1")
        _, stopped = await customer.got.next()
        assert (stopped.typ.value, stopped["data"]["reason"]) == ("chat.voice.stop", "hangup")
        assert proxy.core.bridges == {}
    records = await store.records()
    assert records == setup.legs
    assert {(r.leg, r.party, r.reason) for r in records} == {
        (Leg.INBOUND, operator.id, EndReason.HANGUP),
        (Leg.OUTBOUND, customer.id, EndReason.HANGUP),
    }
    assert all(r.answered is not None and r.cid == "conv" for r in records)
    await store.close()


async def test_customer_busy_reaches_the_operator(setup: Setup) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store = SqliteProxyStore(setup.store_path)
    async with setup.proxy(app, store) as proxy:
        await proxy.bind("conv", operator=operator.id, customer=customer.id)
        await operator.voice.start(app.identity, "conv", "k1", "offer", {})
        _, ring = await customer.got.next()
        assert ring["data"]["operator_name"] == operator.id  # no name given: the id
        await customer.voice.busy(app.identity, "conv", "k1")
        _, busy = await operator.got.next()
        assert busy.typ.value == "chat.voice.busy"
        await eventually(lambda: len(setup.legs) == 2)
    assert {r.reason for r in await store.records()} == {EndReason.BUSY}
    await store.close()


async def test_a_binding_written_elsewhere_is_taken_up_while_running(setup: Setup) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store = SqliteProxyStore(setup.store_path)
    cli = SqliteProxyStore(setup.store_path)  # what ``parley proxy bind`` does
    binding = Binding(
        cid="conv", operator=operator.client.id, operator_name="Olga", customer=customer.client.id
    )
    async with setup.proxy(app, store):
        await cli.bind(binding)
        await eventually(lambda: binding in setup.routes)
        await operator.voice.start(app.identity, "conv", "k1", "offer", {})
        _, ring = await customer.got.next()
        assert ring["call_id"] == "k1"
        await customer.voice.busy(app.identity, "conv", "k1")
        await operator.got.next()
    await cli.close()
    await store.close()


async def test_a_restarted_proxy_takes_up_its_bindings_and_missed_starts(setup: Setup) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store = SqliteProxyStore(setup.store_path)
    async with setup.proxy(app, store) as proxy:
        await proxy.bind("conv", operator=operator.id, customer=customer.id)
    # The proxy is down when the operator calls: the start waits at the relay.
    await operator.voice.start(app.identity, "conv", "k1", "offer", {})
    async with setup.proxy(app, store):
        _, ring = await customer.got.next()
        assert ring["call_id"] == "k1"
        await customer.voice.stop(app.identity, "conv", "k1")
        _, stopped = await operator.got.next()
        assert (stopped.typ.value, stopped["data"]["reason"]) == ("chat.voice.stop", "hangup")
    await store.close()


async def test_binding_an_unknown_identity_is_refused_and_not_stored(setup: Setup) -> None:
    app = await setup.world.identity("app")
    (operator,) = await setup.parties(app, "olga")
    store = SqliteProxyStore(setup.store_path)
    async with setup.proxy(app, store) as proxy:
        with pytest.raises(UnknownIdentity):
            await proxy.bind("conv", operator=operator.id, customer="nobody-here")
    assert await store.routes() == []
    await store.close()
