"""One active proxy per store: a lease in the store, the others wait on standby.

A proxy started with a lease takes it (:meth:`Lease.acquire`) before it connects, or
waits, polling, while another holds it and renews it. The active one renews it every
third of its length (:meth:`Lease.keep`) and stops when it cannot: when another holder
has it, or when renewing has failed for two thirds of its length, so it is gone before
a standby may take the lease over. Every save of the active proxy is fenced by the lease
too (:attr:`~parley.proxy.records.Saved.fence`): should an old active one still be
running, its writes are refused rather than mixed with the new one's.

A clean stop releases the lease, so a standby takes over at once; after a crash it
takes over once the lease has run out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable

from parley.errors import StoreError
from parley.proxy.store import ProxyStore

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, store: ProxyStore, seconds: float) -> None:
        self.store = store
        self.seconds = seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    async def acquire(self, on_standby: Callable[[str], None]) -> None:
        """Return once this process holds the lease; ``on_standby(holder)`` once, if
        another holds it first."""
        told = False
        while True:
            try:
                current = await self.store.lease(self.holder, self.seconds)
            except StoreError as exc:
                log.warning("cannot take the proxy lease yet: %s", exc)
            else:
                if current == self.holder:
                    return
                if not told:
                    on_standby(current)
                    told = True
            await asyncio.sleep(self.seconds / 4)

    async def keep(self) -> str:
        """Renew the lease until it is lost; returns why."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                current = await self.store.lease(self.holder, self.seconds)
            except StoreError as exc:
                if time.monotonic() - renewed > self.seconds * 2 / 3:
                    return f"cannot renew the lease: {exc}"
                log.warning("renewing the proxy lease failed, trying again: %s", exc)
                continue
            if current != self.holder:
                return f"{current} holds the lease now"
            renewed = time.monotonic()

    async def release(self) -> None:
        try:
            await self.store.release(self.holder)
        except StoreError as exc:  # it runs out by itself
            log.warning("cannot release the proxy lease: %s", exc)
