"""``parley proxy`` as a real process on a real relay: the parties are plain SDK clients
that know only the six voice messages, and read the reason from ``data["reason"]``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from tests.client.helpers import eventually
from tests.conftest import Register
from tests.proxy.helpers import Party
from tests.proxy.pg import postgres_database, postgres_server

from parley.client import Client
from parley.credentials import Credentials
from parley.processes import ChildProcess
from parley.protocol.call import EndReason
from parley.proxy import Leg, LegRecord, SqliteProxyStore
from parley.proxy.postgres import PostgresProxyStore

pytestmark = pytest.mark.e2e
__all__ = ["postgres_database", "postgres_server"]  # fixtures, for pytest

LONG = {"lifetime": 30}  # for calls that are answered: never a timeout under load


async def parley(*args: str, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "240", **(env or {})},  # a table as wide as its rows
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


@dataclass
class Scene:
    app: Credentials
    app_path: Path
    store: Path
    proxy: ChildProcess
    olga: Party  # the operator of cid "conv", whose customer is cust
    cust: Party  # also the customer of the hunt group "sales": al and cy
    al: Party
    cy: Party

    async def records(self, count: int) -> list[LegRecord]:
        """The store's records, once there are ``count`` of them."""
        store = SqliteProxyStore(self.store)
        found: list[LegRecord] = []

        async def enough() -> bool:
            found[:] = await store.records()
            return len(found) >= count

        try:
            async with asyncio.timeout(10):
                while not await enough():  # noqa: ASYNC110 - written by another process
                    await asyncio.sleep(0.05)
        finally:
            await store.close()
        assert len(found) == count, found
        return found


@pytest.fixture
async def scene(register: Register, tmp_path: Path) -> AsyncIterator[Scene]:
    app, app_path = await register("app")

    async def party(name: str) -> Party:
        _, path = await register(name)
        client = Client.from_credentials(path)
        await client.connect()
        await client.connections.permit(app.identity)
        return Party(client)

    olga, cust, al, cy = parties = await asyncio.gather(
        *(party(name) for name in ("olga", "cust", "al", "cy"))
    )
    # The store beside the credentials, as the command finds it by default; two
    # processes writing it at once is fine.
    await asyncio.gather(
        parley(
            "proxy", "bind", "-c", str(app_path), "conv",
            "--operator", olga.id, "--customer", cust.id, "--operator-name", "Olga",
        ),
        parley(
            "proxy", "bind-pool", "-c", str(app_path), "sales",
            "--customer", cust.id, "--operator", al.id, "--operator", cy.id,
        ),
    )  # fmt: skip
    proxy = ChildProcess(
        [sys.executable, "-m", "parley", "proxy", "-c", str(app_path), "--ring-lifetime", "3",
         "--grace", "1"],
        re.compile(r"parley proxy ready as (\S+)"),
        name="parley proxy",
    )  # fmt: skip
    match = await proxy.start()
    assert match.group(1) == app.identity
    try:
        yield Scene(app, app_path, tmp_path / "app.proxy.db", proxy, olga, cust, al, cy)
    finally:
        assert await proxy.stop() == 0
        for each in parties:
            await each.client.close()
    assert "parley proxy stopped" in proxy.lines


def legs(records: list[LegRecord], call_id: str) -> dict[tuple[Leg, str], EndReason]:
    return {(r.leg, r.party): r.reason for r in records if r.call_id == call_id}


async def test_accept_then_hangup_and_records_for_both_legs(scene: Scene) -> None:
    app, olga, cust = scene.app.identity, scene.olga, scene.cust
    await olga.voice.start(app, "conv", "k1", "offer", LONG)
    ring = await cust.next("start")
    assert (ring.cid, ring["call_id"], ring["peer_info"]) == ("conv", "k1", "offer")
    assert ring["data"]["operator_name"] == "Olga"
    await cust.voice.accept(app, "conv", "k1", "answer")
    assert (await olga.next("accept"))["peer_info"] == "answer"
    await cust.voice.stop(app, "conv", "k1")
    assert (await olga.next("stop"))["data"]["reason"] == "hangup"

    records = await scene.records(2)
    assert legs(records, "k1") == {
        (Leg.INBOUND, olga.id): EndReason.HANGUP,
        (Leg.OUTBOUND, cust.id): EndReason.HANGUP,
    }
    assert all(r.answered is not None and r.ringing is not None for r in records)
    assert any(line.startswith("parley proxy leg ended: k1") for line in scene.proxy.lines)
    table = await parley("calls", "--store", str(scene.store))
    for text in ("conv", "k1", "inbound", "outbound", olga.id, cust.id, "hangup"):
        assert text in table


async def test_busy_goes_back_to_the_operator(scene: Scene) -> None:
    app, olga, cust = scene.app.identity, scene.olga, scene.cust
    await olga.voice.start(app, "conv", "k2", "offer", LONG)
    await cust.next("start")
    await cust.voice.busy(app, "conv", "k2")
    busy = await olga.next("busy")
    assert busy["call_id"] == "k2"
    records = await scene.records(2)
    assert set(legs(records, "k2").values()) == {EndReason.BUSY}


async def test_nobody_answers_both_legs_time_out_also_in_a_hunt_group(scene: Scene) -> None:
    app, olga, cust = scene.app.identity, scene.olga, scene.cust
    await olga.voice.start(app, "conv", "k3", "offer", {})  # the proxy's lifetime: 3 s
    await cust.next("start")
    assert (await cust.next("stop"))["data"]["reason"] == "timeout"
    assert (await olga.next("stop"))["data"]["reason"] == "timeout"

    await cust.voice.start(app, "sales", "k4", "offer", {"lifetime": 2})
    for operator in (scene.al, scene.cy):
        await operator.next("start")
        assert (await operator.next("stop"))["data"]["reason"] == "timeout"
    assert (await cust.next("stop"))["data"]["reason"] == "timeout"
    records = await scene.records(5)
    assert set(legs(records, "k3").values()) == {EndReason.TIMEOUT}
    assert set(legs(records, "k4").values()) == {EndReason.TIMEOUT}


async def test_a_party_gone_past_the_grace_ends_the_other_leg(scene: Scene) -> None:
    app, olga, cust = scene.app.identity, scene.olga, scene.cust
    await olga.voice.start(app, "conv", "k5", "offer", LONG)
    await cust.next("start")
    await cust.voice.accept(app, "conv", "k5", "answer")
    await olga.next("accept")
    await cust.client.close()  # its connection drops and it does not come back
    assert (await olga.next("stop"))["data"]["reason"] == "gone"
    records = await scene.records(2)
    assert legs(records, "k5") == {
        (Leg.INBOUND, olga.id): EndReason.GONE,
        (Leg.OUTBOUND, cust.id): EndReason.GONE,
    }


async def test_hunt_group_the_first_accept_wins(scene: Scene) -> None:
    app, cust, al, cy = scene.app.identity, scene.cust, scene.al, scene.cy
    await cust.voice.start(app, "sales", "k6", "offer", LONG)
    for operator in (al, cy):
        ring = await operator.next("start")
        assert (ring.cid, ring["peer_info"]) == ("sales", "offer")
    await cy.voice.accept(app, "sales", "k6", "cy-answer")
    assert (await cust.next("accept"))["peer_info"] == "cy-answer"
    assert (await al.next("stop"))["data"]["reason"] == "answered_elsewhere"
    await al.voice.accept(app, "sales", "k6", "al-answer")  # too late: told again
    assert (await al.next("stop"))["data"]["reason"] == "answered_elsewhere"
    await cust.voice.stop(app, "sales", "k6")
    assert (await cy.next("stop"))["data"]["reason"] == "hangup"
    records = await scene.records(3)
    assert legs(records, "k6") == {
        (Leg.INBOUND, cust.id): EndReason.HANGUP,
        (Leg.OUTBOUND, cy.id): EndReason.HANGUP,
        (Leg.OUTBOUND, al.id): EndReason.ANSWERED_ELSEWHERE,
    }


async def test_a_binding_added_while_the_proxy_runs(scene: Scene) -> None:
    app, olga, al = scene.app.identity, scene.olga, scene.al
    await parley(
        "proxy", "bind", "--store", str(scene.store), "later",
        "--operator", al.id, "--customer", olga.id,
    )  # fmt: skip
    await eventually(
        lambda: any(line.startswith("parley proxy bound later") for line in scene.proxy.lines)
    )
    await al.voice.start(app, "later", "k7", "offer", LONG)
    ring = await olga.next("start")
    assert ring["data"]["operator_name"] == al.id
    await olga.voice.busy(app, "later", "k7")
    await al.next("busy")


async def test_the_proxy_on_postgresql_takes_up_a_binding_at_once_and_records_the_call(
    register: Register, postgres_database: str
) -> None:
    dsn = postgres_database
    app, app_path = await register("app")

    async def party(name: str) -> Party:
        _, path = await register(name)
        client = Client.from_credentials(path)
        await client.connect()
        await client.connections.permit(app.identity)
        return Party(client)

    olga, cust = await party("olga"), await party("cust")
    proxy = ChildProcess(
        [sys.executable, "-m", "parley", "proxy", "-c", str(app_path), "--store", dsn],
        re.compile(r"parley proxy ready as (\S+) \(store (\S+)\)"),
        name="parley proxy",
    )
    ready = await proxy.start()
    try:
        assert ready.groups() == (app.identity, dsn)
        # Bound while it runs, by another process: the proxy hears of it by notification.
        await parley(
            "proxy", "bind", "--store", dsn, "conv",
            "--operator", olga.id, "--customer", cust.id, "--operator-name", "Olga",
        )  # fmt: skip
        await eventually(
            lambda: any(line.startswith("parley proxy bound conv") for line in proxy.lines)
        )
        await olga.voice.start(app.identity, "conv", "k1", "offer", LONG)
        ring = await cust.next("start")
        assert (ring["call_id"], ring["data"]["operator_name"]) == ("k1", "Olga")
        await cust.voice.accept(app.identity, "conv", "k1", "answer")
        assert (await olga.next("accept"))["peer_info"] == "answer"
        await olga.voice.stop(app.identity, "conv", "k1")
        assert (await cust.next("stop"))["data"]["reason"] == "hangup"
        await eventually(
            lambda: sum(line.startswith("parley proxy leg ended: k1") for line in proxy.lines) == 2
        )
        # The store named by the environment this time, as a deployment would.
        table = await parley("calls", env={"PARLEY_PROXY_STORE": dsn})
        for text in ("conv", "k1", "inbound", "outbound", olga.id, cust.id, "hangup"):
            assert text in table

        # The server drops the proxy's connections (a restart, a failover): it reconnects
        # and listens again, and a binding written after that is taken up.
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        await eventually(lambda: any("listening again" in line for line in proxy.lines))
        await parley(
            "proxy", "bind", "--store", dsn, "later", "--operator", cust.id, "--customer", olga.id
        )  # fmt: skip
        await eventually(
            lambda: any(line.startswith("parley proxy bound later") for line in proxy.lines)
        )
    finally:
        assert await proxy.stop() == 0
        for each in (olga, cust):
            await each.client.close()
    assert "parley proxy stopped" in proxy.lines


async def test_an_unusable_proxy_store_is_a_one_line_error() -> None:
    for store in ("postgresql://postgres:hunter2@127.0.0.1:1/parley", "redis://127.0.0.1/0"):
        for command in (
            ("calls",),
            ("proxy", "bind", "c1", "--operator", "a1", "--customer", "b1"),
        ):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "parley", *command, "--store", store,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "COLUMNS": "240"},
            )  # fmt: skip
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            text = err.decode()
            assert proc.returncode == 1, text
            assert text.startswith("error: ") and text.count("\n") == 1, text
            assert "Traceback" not in text and "hunter2" not in text


async def test_a_start_for_a_finished_call_is_answered_with_a_stop(scene: Scene) -> None:
    app, olga, cust = scene.app.identity, scene.olga, scene.cust
    await olga.voice.start(app, "conv", "k9", "offer", LONG)
    await cust.next("start")
    await cust.voice.busy(app, "conv", "k9")
    await olga.next("busy")
    await scene.records(2)
    await olga.voice.start(app, "conv", "k9", "offer again", LONG)  # the same call_id
    stop = await olga.next("stop")
    assert stop["call_id"] == "k9" and stop["data"]["reason"] == "failed"
    assert stop["data"]["detail"] == "call k9 has already ended (busy): place a new call"
    await scene.records(2)  # a start turned away is no leg


async def test_sigterm_ends_no_call_and_the_restarted_proxy_goes_on_with_it(
    scene: Scene,
) -> None:
    app, olga, cust = scene.app.identity, scene.olga, scene.cust
    await olga.voice.start(app, "conv", "k9", "offer", LONG)
    await cust.next("start")
    await cust.voice.accept(app, "conv", "k9", "answer")
    await olga.next("accept")
    assert await scene.proxy.stop() == 0
    await cust.voice.stop(app, "conv", "k9")  # while no proxy runs: it waits at the relay
    await scene.proxy.start()
    # The first thing olga hears after the accept: the stop came from nobody else.
    assert (await olga.next("stop"))["data"]["reason"] == "hangup"
    records = await scene.records(2)
    assert legs(records, "k9") == {
        (Leg.INBOUND, olga.id): EndReason.HANGUP,
        (Leg.OUTBOUND, cust.id): EndReason.HANGUP,
    }


async def test_with_drain_sigterm_turns_new_calls_away_and_exits_once_the_last_ended(
    scene: Scene,
) -> None:
    app, olga, cust = scene.app.identity, scene.olga, scene.cust
    assert await scene.proxy.stop() == 0
    scene.proxy.argv.append("--drain")
    await scene.proxy.start()
    await olga.voice.start(app, "conv", "k10", "offer", LONG)
    await cust.next("start")
    await cust.voice.accept(app, "conv", "k10", "answer")
    await olga.next("accept")
    os.kill(scene.proxy.pid, signal.SIGTERM)
    await eventually(lambda: "parley proxy draining, 1 calls up" in scene.proxy.lines)
    await cust.voice.start(app, "sales", "k11", "offer", LONG)
    assert (await cust.next("busy"))["call_id"] == "k11"
    await olga.voice.stop(app, "conv", "k10")
    assert (await cust.next("stop"))["data"]["reason"] == "hangup"
    async with asyncio.timeout(30):
        assert await scene.proxy.wait() == 0
    assert scene.proxy.lines[-1] == "parley proxy stopped"


async def test_a_standby_on_postgresql_takes_the_calls_over_when_the_active_proxy_dies(
    register: Register, postgres_database: str
) -> None:
    dsn = postgres_database
    app, app_path = await register("app")
    parties = []
    for name in ("olga", "cust"):
        _, path = await register(name)
        client = Client.from_credentials(path)
        await client.connect()
        await client.connections.permit(app.identity)
        parties.append(Party(client))
    olga, cust = parties
    await parley(
        "proxy", "bind", "--store", dsn, "conv", "--operator", olga.id, "--customer", cust.id
    )  # fmt: skip

    def proxy() -> ChildProcess:
        return ChildProcess(
            [sys.executable, "-m", "parley", "proxy", "-c", str(app_path), "--store", dsn,
             "--lease", "2"],
            re.compile(r"parley proxy (ready as|standby:) (\S+)"),
            name="parley proxy",
        )  # fmt: skip

    active, standby = proxy(), proxy()
    try:
        assert (await active.start()).group(1) == "ready as"
        assert (await standby.start()).group(1) == "standby:"  # one active at a time
        await olga.voice.start(app.identity, "conv", "k1", "offer", LONG)
        await cust.next("start")
        await cust.voice.accept(app.identity, "conv", "k1", "answer")
        await olga.next("accept")
        await active.kill()
        died = time.monotonic()
        await cust.voice.stop(app.identity, "conv", "k1")  # while no proxy is active
        _, heard = await olga.got.next()
        if heard.typ.value == "chat.voice.accept":  # killed before it knew that went out
            _, heard = await olga.got.next()
        assert (heard.typ.value, heard["data"]["reason"]) == ("chat.voice.stop", "hangup")
        took_over = time.monotonic() - died
        print(f"\nthe standby passed the hang-up on {took_over:.1f} s after the active died")
        assert took_over < 8.0
        # Messages flow as soon as the standby is connected: its ready line may come after.
        await eventually(
            lambda: any(line.startswith("parley proxy ready as") for line in standby.lines)
        )
        store = PostgresProxyStore(dsn)
        try:
            records = await store.records()
        finally:
            await store.close()
        assert legs(records, "k1") == {
            (Leg.INBOUND, olga.id): EndReason.HANGUP,
            (Leg.OUTBOUND, cust.id): EndReason.HANGUP,
        }
    finally:
        await active.kill()
        assert await standby.stop() == 0
        for each in parties:
            await each.client.close()
