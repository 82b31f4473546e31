"""PresenceView: other nodes' devices as heard, and the events that describe a change."""

from __future__ import annotations

from parley.relay.bus.events import PresenceChanged
from parley.relay.bus.presence_view import PresenceView


def changed(identity: str, node: str, *devices: str) -> PresenceChanged:
    return PresenceChanged(identity=identity, node=node, devices=devices)


def test_devices_of_one_identity_add_up_across_nodes() -> None:
    view = PresenceView()
    assert view.apply(changed("alice", "a", "d-1"))
    assert view.apply(changed("alice", "b", "d-2", "d-3"))
    assert not view.apply(changed("alice", "b", "d-2", "d-3"))  # nothing new
    assert view.present("alice") == {"d-1", "d-2", "d-3"}
    assert view.present("bob") == frozenset()
    assert view.apply(changed("alice", "b"))
    assert view.present("alice") == {"d-1"}
    assert view.nodes() == {"a"}
    assert not view.apply(changed("alice", "b"))  # already gone


def test_dropping_a_node_says_each_of_its_identities_is_gone() -> None:
    view = PresenceView()
    view.apply(changed("alice", "a", "d-1"))
    view.apply(changed("bob", "a", "d-2"))
    view.apply(changed("bob", "b", "d-3"))
    assert sorted(view.drop("a"), key=lambda e: e.identity) == [
        changed("alice", "a"),
        changed("bob", "a"),
    ]
    assert view.present("alice") == frozenset()
    assert view.present("bob") == {"d-3"}
    assert view.drop("a") == []
    assert view.devices("b") == {"bob": ("d-3",)}


def test_setting_a_node_whole_reports_only_the_differences() -> None:
    view = PresenceView()
    view.apply(changed("alice", "a", "d-1"))
    view.apply(changed("bob", "a", "d-2"))
    view.apply(changed("carol", "b", "d-9"))
    events = view.set_node("a", {"bob": ("d-2", "d-4"), "dave": ("d-5",)})
    assert sorted(events, key=lambda e: e.identity) == [
        changed("alice", "a"),
        changed("bob", "a", "d-2", "d-4"),
        changed("dave", "a", "d-5"),
    ]
    assert view.devices("a") == {"bob": ("d-2", "d-4"), "dave": ("d-5",)}
    assert view.present("carol") == {"d-9"}  # other nodes untouched
    assert view.set_node("a", {"bob": ("d-2", "d-4"), "dave": ("d-5",)}) == []
    assert view.set_node("a", {}) != [] and view.nodes() == {"b"}
