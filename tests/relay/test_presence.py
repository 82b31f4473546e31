"""Presence: watchers learn which devices of a permitting identity are connected."""

from __future__ import annotations

from parley.protocol import frames
from parley.protocol.frames import ErrorCode
from parley.protocol.keychain import KeyOp
from parley.relay import Relay
from parley.relay.presence import PresenceBoard

from .helpers import Identity, enroll, online


class Recorder:
    def __init__(self, identity: str) -> None:
        self.identity: str | None = identity
        self.frames: list[frames.Frame] = []

    def reply(self, frame: frames.Frame) -> None:
        self.frames.append(frame)


def test_board_announces_only_changes_of_the_device_set() -> None:
    board = PresenceBoard()
    watcher = Recorder("bob")
    board.connected("alice", "d1")
    board.watch(watcher, "alice")
    board.connected("alice", "d1")  # a second connection of the same device: no change
    board.connected("alice", "d2")
    board.disconnected("alice", "d1")
    board.disconnected("alice", "d1")
    board.disconnected("alice", "d2")
    board.disconnected("alice", "d2")  # unknown: ignored
    assert watcher.frames == [
        frames.Presence(identity="alice", devices=["d1"]),
        frames.Presence(identity="alice", devices=["d1", "d2"]),
        frames.Presence(identity="alice", devices=["d2"]),
        frames.Presence(identity="alice", devices=[]),
    ]
    board.forget(watcher)
    board.connected("alice", "d1")
    assert len(watcher.frames) == 4


def test_unwatch_by_identity_stops_only_that_watcher() -> None:
    board = PresenceBoard()
    bob, carol = Recorder("bob"), Recorder("carol")
    board.watch(bob, "alice")
    board.watch(carol, "alice")
    board.unwatch_by("bob", "alice")
    board.connected("alice", "d1")
    assert len(bob.frames) == 1 and len(carol.frames) == 2


async def test_watch_over_the_relay(relay: Relay) -> None:
    alice, bob = Identity.create("alice"), Identity.create("bob")
    await enroll(relay, alice)
    await enroll(relay, bob)
    bob_phone = await online(relay, bob)
    # Alice has not permitted bob: he may not watch her.
    refused = await bob_phone.request(frames.Watch, identities=["alice"])
    assert isinstance(refused, frames.Error) and refused.code is ErrorCode.NOT_PERMITTED
    unknown = await bob_phone.request(frames.Watch, identities=["nobody"])
    assert isinstance(unknown, frames.Error) and unknown.code is ErrorCode.UNKNOWN_IDENTITY

    alice_phone = await online(relay, alice)
    assert isinstance(await alice_phone.request(frames.Permit, identity="bob"), frames.Done)
    assert isinstance(await bob_phone.request(frames.Watch, identities=["alice"]), frames.Done)
    assert await bob_phone.expect(frames.Presence) == frames.Presence(
        identity="alice", devices=["d1"]
    )
    add = alice.next_entry(KeyOp.ADD, "d2", signer="d1")
    assert isinstance(await alice_phone.request(frames.AppendKey, entry=add), frames.Done)
    alice.chain.append(add)
    alice_laptop = await online(relay, alice, "d2")
    assert (await bob_phone.expect(frames.Presence)).devices == ["d1", "d2"]
    await alice_phone.close()
    assert (await bob_phone.expect(frames.Presence)).devices == ["d2"]

    # Revoking bob's permission ends his watch: alice's laptop leaving is not told.
    assert isinstance(await alice_laptop.request(frames.Unpermit, identity="bob"), frames.Done)
    await alice_laptop.close()
    assert isinstance(await bob_phone.request(frames.Unwatch, identities=["alice"]), frames.Done)
    await bob_phone.close()
