"""The proxy's SQLite store: bindings and pools by cid, leg records, other writers seen."""

from __future__ import annotations

from pathlib import Path

from parley.ids import DeviceId, IdentityId
from parley.protocol.call import CallRecord, EndReason, Role
from parley.proxy import (
    Binding,
    Leg,
    LegRecord,
    Pool,
    SqliteProxyStore,
    default_store_path,
)
from parley.proxy.records import parties

APP, OLGA, CUST = IdentityId("app"), IdentityId("olga"), IdentityId("cust")
BINDING = Binding(cid="conv", operator=OLGA, operator_name="Olga", customer=CUST)
POOL = Pool(cid="sales", customer=CUST, operators=(IdentityId("al"), IdentityId("cy")))


def record(role: Role, peer: IdentityId, answered: float | None = 12.0) -> CallRecord:
    return CallRecord(
        call_id="k1",
        cid="conv",
        role=role,
        peer=peer,
        peer_device=DeviceId("d1"),
        started=10.0,
        ringing=10.5,
        answered=answered,
        ended=42.0,
        reason=EndReason.HANGUP,
    )


def test_a_leg_record_names_both_ends_of_the_leg() -> None:
    inbound = LegRecord.of(record(Role.CALLEE, OLGA), APP)
    assert (inbound.leg, inbound.caller, inbound.callee, inbound.party) == (
        Leg.INBOUND,
        OLGA,
        APP,
        OLGA,
    )
    outbound = LegRecord.of(record(Role.CALLER, CUST, answered=None), APP)
    assert (outbound.leg, outbound.caller, outbound.callee, outbound.party) == (
        Leg.OUTBOUND,
        APP,
        CUST,
        CUST,
    )
    assert inbound.duration == 30.0 and outbound.duration == 0.0


async def test_bindings_pools_and_records_survive_reopening(tmp_path: Path) -> None:
    store = SqliteProxyStore(tmp_path / "proxy.db")
    await store.bind(BINDING)
    await store.bind_pool(POOL)
    legs = [
        LegRecord.of(record(Role.CALLEE, OLGA), APP),
        LegRecord.of(record(Role.CALLER, CUST, answered=None), APP),
    ]
    for leg in legs:
        await store.record(leg)
    await store.record(legs[0])  # recorded twice, kept once
    await store.close()

    again = SqliteProxyStore(tmp_path / "proxy.db")
    routes = await again.routes()
    assert routes == [BINDING, POOL]
    assert parties(routes) == {OLGA, CUST, IdentityId("al"), IdentityId("cy")}
    assert await again.records() == legs
    await again.close()


async def test_a_cid_is_either_bound_or_pooled(tmp_path: Path) -> None:
    store = SqliteProxyStore(tmp_path / "proxy.db")
    await store.bind(BINDING)
    await store.bind_pool(Pool(cid="conv", customer=CUST, operators=(OLGA,)))
    assert await store.routes() == [Pool(cid="conv", customer=CUST, operators=(OLGA,))]
    await store.bind(BINDING)
    assert await store.routes() == [BINDING]
    await store.close()


async def test_changed_sees_other_connections_writes_only(tmp_path: Path) -> None:
    proxy = SqliteProxyStore(tmp_path / "proxy.db")
    cli = SqliteProxyStore(tmp_path / "proxy.db")  # as ``parley proxy bind`` opens it
    assert not await proxy.changed()
    await proxy.record(LegRecord.of(record(Role.CALLEE, OLGA), APP))
    assert not await proxy.changed()  # its own write
    await cli.bind(BINDING)
    assert await proxy.changed()
    assert not await proxy.changed()  # reported once
    assert await proxy.routes() == [BINDING]
    await cli.close()
    await proxy.close()


def test_the_default_store_sits_beside_the_credentials(tmp_path: Path) -> None:
    assert default_store_path(tmp_path / "app.json") == tmp_path / "app.proxy.db"
