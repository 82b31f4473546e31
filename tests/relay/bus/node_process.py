"""One relay node's bus in a process of its own, for the tests that SIGKILL it.

    python node_process.py URL PREFIX NODE TTL IDENTITY DEVICE...

starts a RedisBus, publishes that IDENTITY has DEVICEs on NODE, prints ``ready`` once
Redis has it, then runs until it is killed (never closing the bus).
"""

from __future__ import annotations

import asyncio
import sys

from parley.relay.bus.events import PresenceChanged
from parley.relay.bus.redis import RedisBus


async def main(url: str, prefix: str, node: str, ttl: str, identity: str, *devices: str) -> None:
    bus = RedisBus(url, node=node, prefix=prefix, presence_ttl=float(ttl))
    await bus.start(lambda event: None, lambda: None)
    bus.publish(PresenceChanged(identity=identity, node=node, devices=devices))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
