"""CallProxy on real clients and the relay core (in memory): forwarding, records, bindings
from the store, restarts; each on a SQLite store and on a PostgreSQL one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest
from tests.client.helpers import World, eventually
from tests.proxy.helpers import Party

from parley.client import Client
from parley.client.handlers import Observed
from parley.credentials import Credentials
from parley.errors import UnknownIdentity
from parley.protocol.call import EndReason
from parley.protocol.proxy import Binding, Pool, ProxyConfig
from parley.proxy import CallProxy, Leg, LegRecord, ProxyStore, Route, open_proxy_store
from parley.proxy.records import Resumable, Saved


class Setup:
    def __init__(self, world: World, tmp_path: Path, store_location: str) -> None:
        self.world = world
        self.tmp_path = tmp_path
        self.store_location = store_location
        self.legs: list[LegRecord] = []
        self.routes: list[Route] = []

    async def parties(self, app: Credentials, *names: str) -> list[Party]:
        found = []
        for name in names:
            creds = await self.world.identity(name)
            await self.world.permit(creds, app)
            found.append(Party(await self.world.connected(creds)))
        return found

    def store(self) -> ProxyStore:
        """A store on this test's data, as a proxy or ``parley proxy bind`` opens it."""
        return open_proxy_store(self.store_location, poll_interval=0.05)

    def proxy(self, app: Credentials, store: ProxyStore, client: Client | None = None) -> CallProxy:
        if client is None:
            client = self.client(app)
        return CallProxy(
            client,
            store,
            ProxyConfig(ring_lifetime=30, grace=1),
            on_leg=self.legs.append,
            on_route=self.routes.append,
            retry_interval=0.05,
        )

    def client(self, app: Credentials) -> Client:
        return Client(app, state_path=self.world.state_path(app), connector=self.world.link)


@pytest.fixture
def setup(world: World, tmp_path: Path, store_location: str) -> Setup:
    return Setup(world, tmp_path, store_location)


async def test_accept_and_hangup_are_forwarded_and_both_legs_recorded(setup: Setup) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store = setup.store()
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
    store = setup.store()
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
    store = setup.store()
    cli = setup.store()  # what ``parley proxy bind`` does
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
    store = setup.store()
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
    store = setup.store()
    async with setup.proxy(app, store) as proxy:
        with pytest.raises(UnknownIdentity):
            await proxy.bind("conv", operator=operator.id, customer="nobody-here")
    assert await store.routes() == []
    await store.close()


class FlakyReads:
    """A store whose next ``routes()`` fails once ``fail_next`` is set (the database
    gone for a moment); everything else goes to ``store``."""

    def __init__(self, store: ProxyStore) -> None:
        self.store = store
        self.fail_next = False
        self.failed = 0

    async def routes(self) -> list[Route]:
        if self.fail_next:
            self.fail_next = False
            self.failed += 1
            raise OSError("the store is gone for a moment")
        return await self.store.routes()

    async def bind(self, binding: Binding) -> None:
        await self.store.bind(binding)

    async def bind_pool(self, pool: Pool) -> None:
        await self.store.bind_pool(pool)

    async def wait_changed(self) -> None:
        await self.store.wait_changed()

    async def record(self, leg: LegRecord) -> None:
        await self.store.record(leg)

    async def records(self) -> list[LegRecord]:
        return await self.store.records()

    async def save(self, saved: Saved) -> None:
        await self.store.save(saved)

    async def load(self) -> Resumable:
        return await self.store.load()

    async def lease(self, holder: str, seconds: float) -> str:
        return await self.store.lease(holder, seconds)

    async def release(self, holder: str) -> None:
        await self.store.release(holder)

    async def close(self) -> None:
        await self.store.close()


async def test_a_change_whose_read_failed_is_read_again_without_another_change(
    setup: Setup,
) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store, cli = FlakyReads(setup.store()), setup.store()
    binding = Binding(
        cid="conv", operator=operator.client.id, operator_name="Olga", customer=customer.client.id
    )
    async with setup.proxy(app, store):
        store.fail_next = True
        await cli.bind(binding)  # the one change: its first read fails
        await eventually(lambda: binding in setup.routes)
    assert store.failed == 1
    await cli.close()
    await store.close()


class HeldSave(FlakyReads):
    """A store whose next save, once ``hold`` is called, waits until ``resume`` is
    set; the saves from then on are kept in ``saves``."""

    def __init__(self, store: ProxyStore) -> None:
        super().__init__(store)
        self.saves: list[Saved] = []
        self.saving = asyncio.Event()
        self.resume = asyncio.Event()
        self._held = False

    def hold(self) -> None:
        self._held = True

    async def save(self, saved: Saved) -> None:
        if self._held:
            self.saves.append(saved)
            if not self.saving.is_set():
                self.saving.set()
                await self.resume.wait()
        await self.store.save(saved)


async def test_messages_that_reach_the_proxy_together_are_saved_in_one_commit_in_order(
    setup: Setup,
) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store = HeldSave(setup.store())
    async with setup.proxy(app, store) as proxy:
        await proxy.bind("conv", operator=operator.id, customer=customer.id)
        store.hold()
        await operator.voice.start(app.identity, "conv", "k1", "offer", {})
        await store.saving.wait()  # the start's save waits: nothing of it is sent yet
        await operator.voice.stop(app.identity, "conv", "k1")
        await operator.voice.start(app.identity, "conv", "k2", "offer", {})
        await operator.voice.stop(app.identity, "conv", "k2")
        # Delivered meanwhile (no signal for that: the proxy's client waits on the
        # save), so the three are taken in together behind it.
        await asyncio.sleep(0.2)
        assert customer.got.items == []
        store.resume.set()
        for typ, call_id in (("start", "k1"), ("stop", "k1"), ("start", "k2"), ("stop", "k2")):
            assert (await customer.next(typ))["call_id"] == call_id
        await eventually(lambda: len(setup.legs) == 4)
    heard = [len(saved.handled) for saved in store.saves if saved.handled]
    assert heard == [1, 3]  # the held start; then the three behind it, in one commit
    assert {r.reason for r in await store.records()} == {EndReason.HANGUP}
    await store.close()


# -- durable calls: closing ends nothing, a restart resumes ---------------------------------


async def connect_call(proxy: CallProxy, operator: Party, customer: Party) -> None:
    """Bind ``conv`` and connect call ``k1`` from the operator to the customer."""
    app = proxy.core.identity
    await proxy.bind("conv", operator=operator.id, customer=customer.id)
    await operator.voice.start(app, "conv", "k1", "offer", {})
    await customer.next("start")
    await customer.voice.accept(app, "conv", "k1", "answer")
    await operator.next("accept")
    await eventually(lambda: proxy.core.bridges["k1"].inbound.state == "connected")


async def test_a_call_connected_when_the_proxy_stopped_is_resumed_by_the_next_one(
    setup: Setup,
) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store = setup.store()
    async with setup.proxy(app, store) as proxy:
        await connect_call(proxy, operator, customer)
    # Down (as after SIGTERM): the call is still up on both phones; the hang-up waits.
    await customer.voice.stop(app.identity, "conv", "k1")
    async with setup.proxy(app, store) as proxy:
        stopped = await operator.next("stop")  # nothing came before it: close ended nothing
        assert stopped["data"]["reason"] == "hangup"
        await eventually(lambda: len(setup.legs) == 2)
        assert proxy.core.bridges == {}
    records = await store.records()
    assert sorted((r.leg, r.reason) for r in records) == [
        (Leg.INBOUND, EndReason.HANGUP),
        (Leg.OUTBOUND, EndReason.HANGUP),
    ]
    assert all(r.answered is not None for r in records)
    assert len(customer.got.items) == 1  # the start only
    await store.close()


async def test_a_ring_whose_lifetime_passed_while_the_proxy_was_down_times_out(
    setup: Setup,
) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store = setup.store()
    async with setup.proxy(app, store) as proxy:
        await proxy.bind("conv", operator=operator.id, customer=customer.id)
        await operator.voice.start(app.identity, "conv", "k1", "offer", {"lifetime": 3})
        await customer.next("start")
        deadline = proxy.core.bridges["k1"].inbound.ring_deadline
    await asyncio.sleep(max(0.0, deadline - time.time()) + 0.2)  # runs out while down
    async with setup.proxy(app, store) as proxy:
        stopped = await customer.next("stop")
        assert stopped["data"]["reason"] == "timeout"
        await eventually(lambda: len(setup.legs) == 2)
    records = await store.records()
    assert {r.reason for r in records} == {EndReason.TIMEOUT}
    # Ended when the ring ran out, not when the proxy came back to notice it.
    assert all(r.ended <= deadline for r in records)
    await store.close()


async def test_a_call_whose_state_cannot_be_read_is_ended_failed_on_both_sides(
    setup: Setup,
) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store = setup.store()
    async with setup.proxy(app, store) as proxy:
        await connect_call(proxy, operator, customer)
    (row,) = (await store.load()).rows
    await store.save(Saved(rows=(msgspec.structs.replace(row, state=b"\x00 not a bridge"),)))
    async with setup.proxy(app, store) as proxy:
        for party in (operator, customer):
            stopped = await party.next("stop")
            assert (stopped["call_id"], stopped["data"]["reason"]) == ("k1", "failed")
        assert proxy.core.bridges == {}
    # The next start finds its party free (the lost call is not kept "on a call").
    assert not (await store.load()).rows[0].live
    # Its legs are recorded from the row's plain columns, ended failed at the restart.
    lost = [r for r in await store.records() if r.reason is EndReason.FAILED]
    assert sorted((r.leg, r.caller, r.callee) for r in lost) == [
        (Leg.INBOUND, operator.id, app.identity),
        (Leg.OUTBOUND, app.identity, customer.id),
    ]
    assert all(r.call_id == "k1" and r.cid == "conv" and r.answered is None for r in lost)
    await store.close()


class Crash:
    """An observer after the proxy's, before the client's record: on the first start it
    never returns, so the proxy stops with the start saved and not recorded."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()

    async def __call__(self, observed: Observed) -> None:
        if observed.message.typ.value == "chat.voice.start" and not self.reached.is_set():
            self.reached.set()
            await asyncio.Event().wait()  # until the client closes: cancelled


async def test_a_start_delivered_again_after_a_stop_before_its_record_is_handled_once(
    setup: Setup,
) -> None:
    app = await setup.world.identity("app")
    operator, customer = await setup.parties(app, "olga", "cust")
    store = setup.store()
    client = setup.client(app)
    crash = Crash()
    async with setup.proxy(app, store, client) as proxy:
        client.observe(crash, before_record=True)  # after the proxy's own
        await proxy.bind("conv", operator=operator.id, customer=customer.id)
        await operator.voice.start(app.identity, "conv", "k1", "offer", {})
        await customer.next("start")
        await crash.reached.wait()
    # The client delivers the start again; the restarted proxy has it saved: skipped.
    async with setup.proxy(app, store) as proxy:
        await eventually(lambda: proxy.repeats == 1)
        assert proxy.core.bridges["k1"].inbound.state == "ringing"  # resumed, as it was
        await operator.voice.stop(app.identity, "conv", "k1")  # the caller gives up
        await customer.next("stop")
        await eventually(lambda: len(setup.legs) == 2)
    assert len(customer.got.items) == 2  # one start, one stop
    assert {r.reason for r in await store.records()} == {EndReason.HANGUP}
    await store.close()


async def test_draining_answers_new_starts_busy_and_ends_once_the_calls_have(
    setup: Setup,
) -> None:
    app = await setup.world.identity("app")
    operator, customer, other = await setup.parties(app, "olga", "cust", "otto")
    store = setup.store()
    async with setup.proxy(app, store) as proxy:
        await proxy.bind("conv", operator=operator.id, customer=customer.id)
        await proxy.bind("conv2", operator=other.id, customer=customer.id)
        await operator.voice.start(app.identity, "conv", "k1", "offer", {})
        await customer.next("start")
        draining = asyncio.create_task(proxy.drain())
        await other.voice.start(app.identity, "conv2", "k2", "offer", {})
        refused = await other.next("busy")
        assert refused["call_id"] == "k2"
        assert not draining.done()
        await customer.voice.accept(app.identity, "conv", "k1", "answer")
        await operator.next("accept")
        await operator.voice.stop(app.identity, "conv", "k1")
        await customer.next("stop")
        async with asyncio.timeout(30):
            await draining
    await store.close()
