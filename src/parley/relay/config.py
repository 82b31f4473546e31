"""Relay settings: one frozen dataclass, defaults fit for a single small machine."""

from __future__ import annotations

from dataclasses import dataclass

from parley.protocol.frames import DEFAULT_MAX_BODY

SEVEN_DAYS = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class RelayConfig:
    # Largest envelope body accepted; announced to clients in the Challenge.
    max_body: int = DEFAULT_MAX_BODY
    # Seconds a connection may stay unauthenticated before it is closed.
    auth_timeout: float = 10.0
    # Token bucket per connection for Send frames.
    rate_per_second: float = 200.0
    burst: int = 400
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
