"""Which event loop the relay and the proxy run on.

uvloop (libuv underneath) makes each connection's transport a small C object and its
reads and writes cheaper; where it is installed the long-running servers use it unless
told otherwise. Everything else (the SDK in an application's own loop, the
softphones with aiortc) runs on whatever loop it is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum

from parley.errors import EventLoopUnavailable


class LoopChoice(StrEnum):
    AUTO = "auto"  # uvloop if installed, else asyncio's own
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def loop_factory(choice: LoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What :class:`asyncio.Runner` should build its loop with (None: asyncio's default);
    :class:`EventLoopUnavailable` if uvloop is asked for and not installed."""
    if choice is LoopChoice.ASYNCIO:
        return None
    try:
        import uvloop
    except ImportError:
        if choice is LoopChoice.UVLOOP:
            raise EventLoopUnavailable(
                "uvloop is not installed (pip install uvloop, or --loop asyncio)"
            ) from None
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: which loop this code runs on (for its start-up line)."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]
