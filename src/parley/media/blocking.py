"""The softphone for blocking scripts: :class:`parley.media.Softphone` on a
:class:`parley.sync.Client`, with the same thread discipline as the rest of
:mod:`parley.sync` (everything runs on the client's own thread; a handler on that
thread that calls back in blocking raises :class:`~parley.errors.StateError`).

Get one from :meth:`parley.sync.Client.softphone` once the client is connected.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parley.ice import IceConfig
from parley.media.softphone import MEDIA_TIMEOUT, MediaStats
from parley.media.softphone import MediaCall as AsyncMediaCall
from parley.media.softphone import Softphone as AsyncSoftphone
from parley.protocol.call import CallRecord

if TYPE_CHECKING:
    from parley.client import Client
    from parley.sync import Calls, IncomingCall, _LoopThread


class MediaCall:
    """Blocking :class:`parley.media.MediaCall`: one call's audio. ``aio`` is the
    asyncio one it follows."""

    def __init__(self, media: AsyncMediaCall, runner: _LoopThread) -> None:
        self.aio = media
        self._runner = runner

    def __repr__(self) -> str:
        return f"<sync {self.aio!r}>"

    @property
    def call_id(self) -> str:
        return self.aio.call_id

    @property
    def closed(self) -> bool:
        """Whether the media is torn down (the call ended)."""
        return self.aio.closed

    @property
    def connection_state(self) -> str:
        """The peer connection's state (``new``, ``connected``, ``closed``, ...)."""
        return self.aio.connection_state

    @property
    def level_dbfs(self) -> float:
        """The level of what was heard over the last 200 ms, in dBFS."""
        return self.aio.level_dbfs

    @property
    def failure(self) -> str | None:
        """Why the media failed, if it did."""
        return self.aio.failure

    def wait_audio(self, timeout: float | None = None) -> None:
        """Until the peer's audio arrives (see :meth:`parley.media.MediaCall.wait_audio`)."""
        self._runner.run(self.aio.wait_audio(timeout))

    def wait_ended(self, timeout: float | None = None) -> CallRecord:
        """Until the call has ended and its media is torn down; its record."""
        from parley.sync import _within

        return self._runner.run(_within(timeout, self.aio.wait_ended()))

    def hangup(self) -> None:
        self._runner.run(self.aio.hangup())

    def stats(self) -> MediaStats:
        """Packets received and lost, frames, level, round-trip time."""
        return self._runner.run(self.aio.stats())


class Softphone:
    """Places and answers calls with audio, blocking. The arguments are those of
    :class:`parley.media.Softphone`."""

    def __init__(self, phone: AsyncSoftphone, calls: Calls, runner: _LoopThread) -> None:
        self.aio = phone
        self._calls = calls
        self._runner = runner

    @property
    def live(self) -> list[MediaCall]:
        """Calls whose media is not torn down yet."""
        return [MediaCall(media, self._runner) for media in self.aio.live]

    def call(
        self,
        peer: str,
        *,
        source: str | None = None,
        record: str | Path | None = None,
        data: Mapping[str, Any] | None = None,
        lifetime: float | None = None,
        cid: str | None = None,
    ) -> MediaCall:
        """Call ``peer``; returns once the start is sent (then :meth:`MediaCall.wait_audio`)."""
        media = self._runner.run(
            self.aio.call(peer, source=source, record=record, data=data, lifetime=lifetime, cid=cid)
        )
        return MediaCall(media, self._runner)

    def answer(
        self,
        incoming: IncomingCall,
        *,
        source: str | None = None,
        record: str | Path | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> MediaCall:
        """Answer a call ringing here (from :meth:`incoming`) with audio."""
        media = self._runner.run(
            self.aio.answer(incoming.aio, source=source, record=record, data=data)
        )
        return MediaCall(media, self._runner)

    def incoming(self, *, timeout: float | None = None) -> Iterator[IncomingCall]:
        """Calls ringing here, oldest first (see :meth:`parley.sync.Calls.incoming`)."""
        return self._calls.incoming(timeout=timeout)

    def close(self) -> None:
        """Hang up every call and tear its media down."""
        self._runner.run(self.aio.close())


async def open_softphone(
    client: Client, source: str, ice: IceConfig | None, media_timeout: float
) -> AsyncSoftphone:
    """On the client's thread: the asyncio softphone of a connected ``client``."""
    return AsyncSoftphone(client, source=source, ice=ice, media_timeout=media_timeout)


__all__ = ["MEDIA_TIMEOUT", "MediaCall", "Softphone"]
