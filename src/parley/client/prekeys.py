"""Keeping this device's keys published: its Olm identity, one-time and fallback keys.

On connect the device publishes its identity key (signed by its device key) with any
one-time keys and fallback key not yet published, and tops up to
:data:`ONE_TIME_KEYS_TARGET` when the relay holds fewer than :data:`ONE_TIME_KEYS_LOW`.
The relay pushes a count whenever a claim leaves the device low or hands out its
fallback key, and after a reconnect if either is so, so topping up also happens while
the device stays connected. A fallback key that was handed out is replaced by a new one
(rotated) with the next top-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from parley.client.connection import Connection
from parley.client.olm import OlmDevice
from parley.client.state import State
from parley.errors import DeliveryTimeout, RelayConnectionError, RelayError
from parley.protocol.frames import (
    ONE_TIME_KEYS_LOW,
    ONE_TIME_KEYS_TARGET,
    KeyCount,
    PublishKeys,
)

log = logging.getLogger(__name__)


class Prekeys:
    def __init__(self, connection: Connection, olm: OlmDevice, state: State) -> None:
        self._connection = connection
        self._olm = olm
        self._state = state
        self._lock = asyncio.Lock()
        # What the relay last said it holds; None until it has said anything.
        self._count: int | None = None
        self._fallback_fresh = True
        self._topping_up: asyncio.Task[None] | None = None

    @property
    def count(self) -> int | None:
        return self._count

    async def publish(self) -> None:
        """Publish the identity key and whatever one-time keys are due."""
        async with self._lock:
            await self._publish(self._olm.one_time_keys(0), self._olm.fallback_key(rotate=False))
            if self._due():
                await self._top_up()

    def received(self, frame: KeyCount) -> None:
        """A count the relay pushed: top up (and rotate the fallback key) in the
        background if it is low or the fallback key was handed out."""
        self._count, self._fallback_fresh = frame.one_time_keys, frame.fallback_key
        if self._due() and (self._topping_up is None or self._topping_up.done()):
            self._topping_up = asyncio.create_task(self._top_up_soon(), name="parley-prekeys")

    def _due(self) -> bool:
        """Whether the relay is low on one-time keys or has handed out the fallback key."""
        low = self._count is not None and self._count < ONE_TIME_KEYS_LOW
        return low or not self._fallback_fresh

    async def close(self) -> None:
        task, self._topping_up = self._topping_up, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _top_up_soon(self) -> None:
        try:
            async with self._lock:
                # Re-read under the lock: a publish in between may have topped up already.
                if self._due():
                    await self._top_up()
        except (DeliveryTimeout, RelayConnectionError, RelayError) as exc:
            # The next low count (pushed after a reconnect or a claim) tries again.
            log.warning("could not top up one-time keys: %s", exc)

    async def _top_up(self) -> None:
        held = self._count or 0
        await self._publish(
            self._olm.one_time_keys(ONE_TIME_KEYS_TARGET - held),
            self._olm.fallback_key(rotate=not self._fallback_fresh),
        )

    async def _publish(self, one_time_keys: list[bytes], fallback_key: bytes | None) -> None:
        # Written before they leave: the account must still hold every key the relay has.
        await self._state.commit()
        identity_key = self._olm.identity_key
        signature = self._olm.identity_key_signature
        reply = await self._connection.request(
            lambda ref: PublishKeys(
                ref=ref,
                identity_key=identity_key,
                signature=signature,
                one_time_keys=one_time_keys,
                fallback_key=fallback_key,
            ),
            KeyCount,
        )
        if one_time_keys or fallback_key is not None:
            self._olm.mark_published()
            await self._state.commit()
            log.info(
                "published %d one-time keys%s; the relay holds %d",
                len(one_time_keys),
                "" if fallback_key is None else " and a new fallback key",
                reply.one_time_keys,
            )
        self._count, self._fallback_fresh = reply.one_time_keys, reply.fallback_key
