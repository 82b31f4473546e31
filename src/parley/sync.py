"""A blocking facade over :class:`parley.client.Client`, for scripts.

Threads: :meth:`Client.connect` (or entering ``with client:``) starts exactly one
worker thread, ``parley-client``, running an asyncio event loop; the constructor starts
nothing. Every network operation runs on that loop; each blocking call here submits a
coroutine to it and waits for the result. :meth:`Client.close` (or leaving the
``with`` block) closes the client, stops the loop and joins the thread. The thread is
not a daemon: a script that forgets ``close()`` keeps running rather than dropping
messages halfway.

Handlers run on the worker thread, one at a time, in delivery order. A handler must not
call the blocking methods of this facade (it would wait for the very thread it runs
on); they raise :class:`~parley.errors.StateError` there. To send from a handler, make
it ``async def`` and await the asyncio service, e.g. ``await voice.aio.start(...)``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, TypeVar

from parley.client import Client as AsyncClient
from parley.client import Connections as AsyncConnections
from parley.client import Connector, Handler
from parley.client import Voice as AsyncVoice
from parley.credentials import Credentials
from parley.errors import NotConnected, StateError
from parley.ids import DeviceId, IdentityId
from parley.protocol.messages import (
    VoiceAccept,
    VoiceBusy,
    VoiceSetup,
    VoiceStart,
    VoiceStop,
    VoiceSummary,
)

__all__ = ["Client", "Connections", "Voice"]

T = TypeVar("T")


class _LoopThread:
    """One event loop in one worker thread; blocking calls are submitted to it."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._main, args=(loop,), name="parley-client", daemon=False
        )
        thread.start()
        self._loop, self._thread = loop, thread

    def check_caller(self) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise StateError(
                "blocking call from a handler on the client's thread; "
                "use an async def handler and await the .aio service instead"
            )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            self.check_caller()
        except StateError:
            coro.close()
            raise
        loop = self._loop
        if loop is None:
            coro.close()
            raise NotConnected("the client is not connected; call connect() first")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted (Ctrl-C) or failed: do not leave the operation running.
            future.cancel()
            raise

    def stop(self) -> None:
        self.check_caller()
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    @staticmethod
    def _main(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class Connections:
    """Blocking :class:`parley.client.Connections`."""

    def __init__(self, connections: AsyncConnections, runner: _LoopThread) -> None:
        self.aio = connections
        self._run = runner.run

    def permit(self, identity: str) -> None:
        self._run(self.aio.permit(identity))

    def revoke(self, identity: str) -> None:
        self._run(self.aio.revoke(identity))

    def list(self) -> list[str]:
        return self._run(self.aio.list())


class Voice:
    """Blocking :class:`parley.client.Voice`; handlers run on the client's thread."""

    def __init__(self, voice: AsyncVoice, runner: _LoopThread) -> None:
        self.aio = voice
        self._run = runner.run

    def setup(self, recipient: str, name: str, cid: str) -> VoiceSetup:
        return self._run(self.aio.setup(recipient, name, cid))

    def start(
        self, recipient: str, cid: str, call_id: str, peer_info: str, data: Mapping[str, Any]
    ) -> VoiceStart:
        return self._run(self.aio.start(recipient, cid, call_id, peer_info, data))

    def accept(
        self,
        recipient: str,
        cid: str,
        call_id: str,
        peer_info: str,
        data: Mapping[str, Any] | None = None,
    ) -> VoiceAccept:
        return self._run(self.aio.accept(recipient, cid, call_id, peer_info, data))

    def busy(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceBusy:
        return self._run(self.aio.busy(recipient, cid, call_id, data))

    def stop(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceStop:
        return self._run(self.aio.stop(recipient, cid, call_id, data))

    def summary(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceSummary:
        return self._run(self.aio.summary(recipient, cid, call_id, data))

    def on_setup(self, handler: Handler[VoiceSetup]) -> Handler[VoiceSetup]:
        return self.aio.on_setup(handler)

    def on_start(self, handler: Handler[VoiceStart]) -> Handler[VoiceStart]:
        return self.aio.on_start(handler)

    def on_accept(self, handler: Handler[VoiceAccept]) -> Handler[VoiceAccept]:
        return self.aio.on_accept(handler)

    def on_busy(self, handler: Handler[VoiceBusy]) -> Handler[VoiceBusy]:
        return self.aio.on_busy(handler)

    def on_stop(self, handler: Handler[VoiceStop]) -> Handler[VoiceStop]:
        return self.aio.on_stop(handler)

    def on_summary(self, handler: Handler[VoiceSummary]) -> Handler[VoiceSummary]:
        return self.aio.on_summary(handler)


class Client:
    """Blocking :class:`parley.client.Client`; same arguments, same services.

    ``connector``, if given, is an async callable run on the client's thread.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        state_path: str | os.PathLike[str] | None = None,
        connector: Connector | None = None,
        ack_timeout: float = 10.0,
        message_lifetime: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.aio = AsyncClient(
            credentials,
            state_path=state_path,
            connector=connector,
            ack_timeout=ack_timeout,
            message_lifetime=message_lifetime,
            clock=clock,
        )
        self._runner = _LoopThread()
        self._started = False
        self.connections = Connections(self.aio.connections, self._runner)
        self._voice = Voice(self.aio.voice(), self._runner)

    @classmethod
    def from_credentials(
        cls,
        path: str | os.PathLike[str],
        *,
        state_path: str | os.PathLike[str] | None = None,
        connector: Connector | None = None,
        ack_timeout: float = 10.0,
        message_lifetime: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> Client:
        return cls(
            Credentials.load(path),
            state_path=Credentials.default_state_path(path) if state_path is None else state_path,
            connector=connector,
            ack_timeout=ack_timeout,
            message_lifetime=message_lifetime,
            clock=clock,
        )

    @property
    def id(self) -> IdentityId:
        return self.aio.id

    @property
    def device(self) -> DeviceId:
        return self.aio.device

    @property
    def rejected(self) -> Counter[str]:
        return self.aio.rejected

    def voice(self) -> Voice:
        return self._voice

    def connect(self) -> None:
        """Start the client's thread, connect and authenticate."""
        if self._started:
            raise StateError("a client connects once; make a new one to connect again")
        self._started = True
        self._runner.start()
        try:
            self._runner.run(self.aio.connect())
        except BaseException:
            self._runner.stop()
            raise

    def close(self) -> None:
        """Close the client, then stop and join its thread."""
        self._runner.check_caller()
        try:
            self._runner.run(self.aio.close())
        except NotConnected:
            pass  # never connected, or closed already
        finally:
            self._runner.stop()

    def revoke_device(self, device: str) -> None:
        self._runner.run(self.aio.revoke_device(device))

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
