"""Keeping this device's keys published: its Olm identity key and one-time keys.

On connect the device publishes its identity key (signed by its device key) with any
one-time keys not yet published, and tops up to :data:`ONE_TIME_KEYS_TARGET` when the
relay holds fewer than :data:`ONE_TIME_KEYS_LOW`. The relay pushes a count whenever a
claim leaves the device low, and after a reconnect if it is low, so topping up also
happens while the device stays connected.
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
        self._topping_up: asyncio.Task[None] | None = None

    @property
    def count(self) -> int | None:
        return self._count

    async def publish(self) -> None:
        """Publish the identity key and whatever one-time keys are due."""
        async with self._lock:
            await self._publish(self._olm.one_time_keys(0))
            if self._count is not None and self._count < ONE_TIME_KEYS_LOW:
                await self._top_up()

    def received(self, frame: KeyCount) -> None:
        """A count the relay pushed: top up in the background if it is low."""
        self._count = frame.one_time_keys
        if frame.one_time_keys < ONE_TIME_KEYS_LOW and (
            self._topping_up is None or self._topping_up.done()
        ):
            self._topping_up = asyncio.create_task(self._top_up_soon(), name="parley-prekeys")

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
                if self._count is not None and self._count < ONE_TIME_KEYS_LOW:
                    await self._top_up()
        except (DeliveryTimeout, RelayConnectionError, RelayError) as exc:
            # The next low count (pushed after a reconnect or a claim) tries again.
            log.warning("could not top up one-time keys: %s", exc)

    async def _top_up(self) -> None:
        held = self._count or 0
        await self._publish(self._olm.one_time_keys(ONE_TIME_KEYS_TARGET - held))

    async def _publish(self, one_time_keys: list[bytes]) -> None:
        # Written before they leave: the account must still hold every key the relay has.
        self._state.save_olm(self._olm.take_changes())
        identity_key = self._olm.identity_key
        signature = self._olm.identity_key_signature
        reply = await self._connection.request(
            lambda ref: PublishKeys(
                ref=ref,
                identity_key=identity_key,
                signature=signature,
                one_time_keys=one_time_keys,
            ),
            KeyCount,
        )
        if one_time_keys:
            self._olm.mark_published()
            self._state.save_olm(self._olm.take_changes())
            log.info(
                "published %d one-time keys; the relay holds %d",
                len(one_time_keys),
                reply.one_time_keys,
            )
        self._count = reply.one_time_keys
