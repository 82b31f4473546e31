"""DurableCore on a real store, without a network: each message handled once across a
restart, handled ids forgotten once expired, and the outbox holding every send until it
is out (what was still retried at a stop is sent again by the next core)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from parley.ids import DeviceId, IdentityId
from parley.protocol.call_io import Received, Send
from parley.protocol.messages import MessageType
from parley.protocol.proxy import Binding, Proxy
from parley.protocol.proxy_state import Heard, MessageId, Resume
from parley.proxy.durable import FORGET_MARGIN, PRUNE_EVERY, DurableCore
from parley.proxy.store import SqliteProxyStore

APP, OLGA, OTTO = IdentityId("app"), IdentityId("olga"), IdentityId("otto")
CUST, CARL = IdentityId("cust"), IdentityId("carl")
BINDINGS = (
    Binding(cid="conv", operator=OLGA, operator_name="Olga", customer=CUST),
    Binding(cid="conv2", operator=OTTO, operator_name="Otto", customer=CARL),
)


async def started(path: Path) -> DurableCore:
    core = Proxy(APP, DeviceId("d-app"))
    for binding in BINDINGS:
        core.bind(binding)
    store = SqliteProxyStore(path)
    durable = DurableCore(core, store)
    await durable.restore()
    _stores[durable] = store
    return durable


_stores: dict[DurableCore, SqliteProxyStore] = {}


async def stopped(durable: DurableCore) -> None:
    await durable.close()
    await _stores.pop(durable).close()


def start(call_id: str, cid: str, issuer: IdentityId, jti: str, now: float = 1.0) -> Heard:
    received = Received(
        now=now,
        kind=MessageType.VOICE_START,
        issuer=issuer,
        device=DeviceId("d1"),
        iat=int(now),
        cid=cid,
        call_id=call_id,
    )
    return Heard(received=received, id=MessageId(issuer, jti, exp=int(now) + 60))


def sends(out: Sequence[object]) -> list[tuple[str, str]]:
    return [(o.recipient, o.call_id) for o in out if isinstance(o, Send)]


async def test_a_message_handled_before_a_restart_is_skipped_after_it(tmp_path: Path) -> None:
    durable = await started(tmp_path / "p.db")
    durable.handle(Resume(now=1.0))
    assert sends(durable.handle(start("k1", "conv", OLGA, "j1"))) == [(CUST, "k1")]
    await stopped(durable)

    durable = await started(tmp_path / "p.db")
    assert durable.handle(start("k1", "conv", OLGA, "j1")) == []  # delivered again
    assert durable.repeats == 1
    # Another message with the same call_id is not a repeat: it reaches the core.
    assert durable.handle(start("k9", "conv", OLGA, "j2")) != []
    assert durable.repeats == 1
    await stopped(durable)


async def test_handled_ids_are_forgotten_once_their_messages_expired(tmp_path: Path) -> None:
    durable = await started(tmp_path / "p.db")
    durable.handle(start("k1", "conv", OLGA, "old"))  # exp 61
    later = 61 + FORGET_MARGIN + 1
    for n in range(PRUNE_EVERY - 1):
        durable.handle(start(f"x{n}", "nowhere", OLGA, f"j{n}", now=later))
    await stopped(durable)
    store = SqliteProxyStore(tmp_path / "p.db")
    kept = {m.jti for m in (await store.load()).handled}
    await store.close()
    assert "old" not in kept
    assert len(kept) == PRUNE_EVERY - 1


async def test_an_id_forgotten_once_its_message_expired_is_handled_if_it_comes_again(
    tmp_path: Path,
) -> None:
    durable = await started(tmp_path / "p.db")
    durable.handle(Resume(now=1.0))
    later = 61 + FORGET_MARGIN + 1
    durable.handle(start("k2", "conv", OLGA, "new", now=later))  # exp later + 60
    durable.handle(start("k1", "conv", OLGA, "old"))  # exp 61, heard after the new one
    await stopped(durable)

    durable = await started(tmp_path / "p.db")  # the ids as restored, not as heard
    durable.handle(Resume(now=later))
    for n in range(PRUNE_EVERY):  # the last of them prunes
        durable.handle(start(f"x{n}", "nowhere", OLGA, f"j{n}", now=later))
    assert durable.handle(start("k2", "conv", OLGA, "new", now=later)) == []
    assert durable.repeats == 1
    assert durable.handle(start("k3", "conv", OLGA, "old", now=later)) != []  # not a repeat
    assert durable.repeats == 1
    await stopped(durable)


async def test_a_send_still_retried_at_a_stop_is_sent_by_the_next_core(tmp_path: Path) -> None:
    durable = await started(tmp_path / "p.db")
    durable.handle(Resume(now=1.0))
    (retried,) = [o for o in durable.handle(start("k1", "conv", OLGA, "j1")) if isinstance(o, Send)]
    # The runner could not deliver it and retries it in the background; the next
    # input's send goes out.
    (out,) = [o for o in durable.handle(start("k2", "conv2", OTTO, "j2")) if isinstance(o, Send)]
    durable.sent(out)
    await stopped(durable)

    durable = await started(tmp_path / "p.db")
    (again,) = [o for o in durable.handle(Resume(now=2.0)) if isinstance(o, Send)]
    assert again == retried
    durable.sent(again)
    await stopped(durable)
    durable = await started(tmp_path / "p.db")
    assert sends(durable.handle(Resume(now=3.0))) == []  # out now: nothing is sent again
    await stopped(durable)


async def test_an_input_before_resume_keeps_the_outbox_it_was_given(tmp_path: Path) -> None:
    """Messages may come in between restore and Resume: their save keeps the restored
    outbox, so a crash right then still sends it."""
    durable = await started(tmp_path / "p.db")
    durable.handle(Resume(now=1.0))
    durable.handle(start("k1", "conv", OLGA, "j1"))  # its send not out at the stop
    await stopped(durable)
    durable = await started(tmp_path / "p.db")
    durable.handle(start("k2", "conv2", OTTO, "j2"))
    await stopped(durable)  # before Resume: nothing of either is out

    durable = await started(tmp_path / "p.db")
    assert sorted(sends(durable.handle(Resume(now=2.0)))) == [(CARL, "k2"), (CUST, "k1")]
    await stopped(durable)
