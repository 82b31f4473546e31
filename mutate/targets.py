"""Which modules are mutated, and the unit tests that must catch each mutant.

Each module is tested by the tests of its own layer (in-process, no relay process), so
a run stays in minutes and a surviving mutant points at a gap in those tests, not at
an end-to-end test that happens to notice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    module: str  # path under the project's root
    tests: tuple[str, ...]  # pytest paths under the project's root


TARGETS = (
    Target(
        "verify",
        "src/parley/client/verify.py",
        ("tests/client/test_verify.py", "tests/client/test_delivery.py"),
    ),
    Target(
        "inbox",
        "src/parley/client/inbox.py",
        (
            "tests/client/test_inbox.py",
            "tests/client/test_delivery.py",
            "tests/client/test_observe.py",
            "tests/client/test_verify.py",
        ),
    ),
    Target(
        "client-state",
        "src/parley/client/state.py",
        (
            "tests/client/test_state.py",
            "tests/client/test_state_commit.py",
            "tests/client/test_state_file.py",
            "tests/client/test_state_thread.py",
        ),
    ),
    Target(
        "relay-session",
        "src/parley/relay/session.py",
        (
            "tests/relay/test_session.py",
            # Pins the close codes core.py sends by this module's constants.
            "tests/protocol/test_wire_constants.py",
            "tests/relay/test_core.py",
        ),
    ),
    Target(
        "relay-core",
        "src/parley/relay/core.py",
        (
            "tests/relay/test_core_lifecycle.py",
            "tests/relay/test_core.py",
            "tests/relay/test_core_nodes.py",
            "tests/relay/test_abuse_limits.py",
            "tests/relay/test_connection.py",
            "tests/relay/test_presence.py",
            "tests/relay/test_cluster.py",
        ),
    ),
    Target(
        "relay-connection",
        "src/parley/relay/connection.py",
        (
            "tests/relay/test_connection.py",
            "tests/relay/test_core.py",
            "tests/relay/test_core_lifecycle.py",
            "tests/relay/test_core_nodes.py",
        ),
    ),
    Target(
        "relay-store",
        "src/parley/relay/store/sqlite.py",
        ("tests/relay/store/test_sqlite.py", "tests/relay/store/test_store.py"),
    ),
    Target(
        "group-commit",
        "src/parley/relay/store/group_commit.py",
        ("tests/relay/store/test_group_commit.py",),
    ),
    Target(
        "proxy-store",
        "src/parley/proxy/store.py",
        ("tests/proxy/test_store.py",),
    ),
    Target(
        "phone",
        "src/parley/protocol/call_phone.py",
        (
            "tests/protocol/test_call.py",
            "tests/protocol/test_call_parties.py",
            "tests/protocol/test_call_stateful.py",
        ),
    ),
    Target(
        "proxy-core",
        "src/parley/protocol/proxy.py",
        (
            "tests/protocol/test_proxy.py",
            "tests/protocol/test_proxy_parties.py",
            "tests/protocol/test_proxy_resume.py",
        ),
    ),
    Target("jws", "src/parley/crypto/jws.py", ("tests/crypto/test_jws.py",)),
    Target("sealed", "src/parley/crypto/sealed.py", ("tests/crypto/test_sealed.py",)),
)
