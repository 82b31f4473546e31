"""Every fuzz target, for the Hypothesis run in ``tests/fuzz`` and for ``./run fuzz``."""

from __future__ import annotations

from fuzz import (
    client_frame,
    credentials_file,
    jws,
    key_chain_entry,
    page_message,
    payload,
    peer_info,
    relay_frame,
    sealed_body,
    state_file,
)
from fuzz.harness import Target

ALL: tuple[Target, ...] = tuple(
    module.TARGET
    for module in (
        client_frame,
        relay_frame,
        jws,
        payload,
        sealed_body,
        key_chain_entry,
        credentials_file,
        state_file,
        peer_info,
        page_message,
    )
)
