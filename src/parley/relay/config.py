"""Relay settings: one frozen dataclass, defaults fit for a single small machine."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from parley.protocol.frames import DEFAULT_MAX_BODY

SEVEN_DAYS = 7 * 24 * 3600.0


class RegistrationPolicy(enum.StrEnum):
    """Who may register a new identity: anyone, whoever holds an invitation token, or
    nobody (a relay whose identities are all made already)."""

    OPEN = "open"
    TOKEN = "token"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class RelayConfig:
    # Largest envelope body accepted; announced to clients in the Challenge.
    """A relay's settings: body and name limits, timeouts, request budgets per device and per
    identity, connection caps and the registration policy; every field has the default ``parley
    relay`` uses and an option of its own."""

    max_body: int = DEFAULT_MAX_BODY
    # Seconds a connection may stay unauthenticated before it is closed.
    auth_timeout: float = 10.0
    # Token buckets for every request that costs the relay work (Send, ClaimKeys,
    # GetKeys, Watch, Permit, ...): one per device, shared by its connections to this
    # node, and one per identity, shared by its devices. Tokens a second; at most saved.
    # (A phone needs a few a second at most; an app that proxies many calls for one
    # identity needs more: give it --identity-rate.)
    device_rate: float = 50.0
    device_burst: int = 200
    identity_rate: float = 100.0
    identity_burst: int = 400
    # Connections one device may keep open to this node; a new one past this closes
    # the oldest. (On several nodes a device has one: the newest closes the others.)
    connections_per_device: int = 4
    # Per network address: connections not authenticated yet (more are closed at once),
    # and registrations (a token bucket: per second, at most saved).
    preauth_per_source: int = 32
    registration_rate: float = 1.0
    registration_burst: int = 30
    # Longest display name of an identity, in characters.
    max_name: int = 128
    registration: RegistrationPolicy = RegistrationPolicy.OPEN
    # Envelopes never live longer than this, whatever the sender asks for.
    max_lifetime: float = SEVEN_DAYS
    # How often expired inbox rows and envelopes are deleted.
    sweep_interval: float = 1.0
    # Live deliveries buffered per connection before it falls back to reading the store.
    send_queue: int = 1024
    # Inbox rows read per query when a connection catches up from the store.
    catchup_batch: int = 256
    # Replies (Ack, Error, ...) buffered per connection before the relay stops reading
    # that connection's requests, so a client that never reads cannot grow memory.
    reply_queue: int = 1024
    # Seconds given to a closing connection to flush what is already queued for it.
    close_timeout: float = 5.0
    # Every connection is pinged this often (None: never); one that has not answered
    # by the next round is closed, so a peer that vanished without a FIN goes away.
    ping_interval: float | None = 20.0
    # Bytes queued per connection at most: replies, live deliveries (past it: read from
    # the store instead), and one catch-up read, so a connection's memory is bounded
    # whatever it is sent.
    reply_bytes: int = 1 << 20
    send_queue_bytes: int = 1 << 20
    catchup_bytes: int = 1 << 20
    # Seconds one write to a client may wait for it to read; then it is closed (what it
    # was sent stays in its inbox for its next connection).
    write_timeout: float = 30.0
