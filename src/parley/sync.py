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

Calls (:meth:`Client.calls`) follow the same discipline: ``place``, ``accept``, ``busy``,
``decline``, ``hangup`` and ``wait_ended`` block the calling thread while the call
service, running on the worker thread, does the work; :meth:`Calls.incoming` and
:meth:`Call.events` are plain iterators whose every ``next()`` is a blocking call (each
takes an optional ``timeout``: past it, :class:`TimeoutError`, and that iteration ends).
None of them may be used from a handler. Give the configuration before
:meth:`Client.connect`, as for the asyncio client: ``client.calls(PhoneConfig(...))``
then ``with client:``; the service starts on the worker thread before the client
connects, so no start that waited in the inbox is missed. The attributes of a call
(``state``, ``record``, ``call_id``) are kept up to date by the worker thread and may be
read from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from parley.client import Call as AsyncCall
from parley.client import Calls as AsyncCalls
from parley.client import CallUpdate, Connector, Handler
from parley.client import Client as AsyncClient
from parley.client import Connections as AsyncConnections
from parley.client import IncomingCall as AsyncIncomingCall
from parley.client import Voice as AsyncVoice
from parley.credentials import Credentials
from parley.errors import NotConnected, StateError
from parley.ice import IceConfig
from parley.ids import DeviceId, IdentityId
from parley.protocol.call import CallRecord, CallState
from parley.protocol.call_phone import PhoneConfig
from parley.protocol.messages import (
    VoiceAccept,
    VoiceBusy,
    VoiceSetup,
    VoiceStart,
    VoiceStop,
    VoiceSummary,
)

if TYPE_CHECKING:
    from parley.media.blocking import Softphone as BlockingSoftphone

__all__ = ["Call", "Calls", "Client", "Connections", "IncomingCall", "Voice"]

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

    @property
    def running(self) -> bool:
        return self._loop is not None

    def iterate(self, agen: AsyncGenerator[T, None], timeout: float | None) -> Iterator[T]:
        """``agen`` (made on the loop) as a blocking iterator; each item within
        ``timeout`` seconds or :class:`TimeoutError`. Closing the iterator closes it."""

        async def step() -> T:
            async with asyncio.timeout(timeout):
                return await anext(agen)

        began = False
        try:
            while True:
                try:
                    item = self.run(step())
                except StopAsyncIteration:
                    return
                except NotConnected:
                    if began:
                        return  # the client closed between two items: the iteration ends
                    raise
                began = True
                yield item
        finally:
            if self._loop is not None and not self._on_loop_thread():
                # NotConnected: the client closed meanwhile.
                with contextlib.suppress(NotConnected, RuntimeError):
                    self.run(agen.aclose())

    def _on_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

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
        """Accept messages from ``identity`` (blocks until the relay confirms)."""
        self._run(self.aio.permit(identity))

    def revoke(self, identity: str) -> None:
        """Stop accepting messages from ``identity``."""
        self._run(self.aio.revoke(identity))

    def list(self) -> list[str]:
        """The identities this one accepts messages from."""
        return self._run(self.aio.list())


class Voice:
    """Blocking :class:`parley.client.Voice`; handlers run on the client's thread."""

    def __init__(self, voice: AsyncVoice, runner: _LoopThread) -> None:
        self.aio = voice
        self._run = runner.run

    def setup(self, recipient: str, name: str, cid: str) -> VoiceSetup:
        """Send ``chat.voice.setup``; blocks until the relay stored it."""
        return self._run(self.aio.setup(recipient, name, cid))

    def start(
        self, recipient: str, cid: str, call_id: str, peer_info: str, data: Mapping[str, Any]
    ) -> VoiceStart:
        """Send ``chat.voice.start`` with ``peer_info`` (the offer); blocks until stored."""
        return self._run(self.aio.start(recipient, cid, call_id, peer_info, data))

    def accept(
        self,
        recipient: str,
        cid: str,
        call_id: str,
        peer_info: str,
        data: Mapping[str, Any] | None = None,
    ) -> VoiceAccept:
        """Send ``chat.voice.accept`` with ``peer_info`` (the answer); blocks until stored."""
        return self._run(self.aio.accept(recipient, cid, call_id, peer_info, data))

    def busy(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceBusy:
        """Send ``chat.voice.busy``; blocks until stored."""
        return self._run(self.aio.busy(recipient, cid, call_id, data))

    def stop(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceStop:
        """Send ``chat.voice.stop`` (a hang-up); blocks until stored."""
        return self._run(self.aio.stop(recipient, cid, call_id, data))

    def summary(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceSummary:
        """Send ``chat.voice.summary``; blocks until stored."""
        return self._run(self.aio.summary(recipient, cid, call_id, data))

    def on_setup(self, handler: Handler[VoiceSetup]) -> Handler[VoiceSetup]:
        """Handle every ``chat.voice.setup`` (the handler runs on the client's thread)."""
        return self.aio.on_setup(handler)

    def on_start(self, handler: Handler[VoiceStart]) -> Handler[VoiceStart]:
        """Handle every ``chat.voice.start`` (the handler runs on the client's thread)."""
        return self.aio.on_start(handler)

    def on_accept(self, handler: Handler[VoiceAccept]) -> Handler[VoiceAccept]:
        """Handle every ``chat.voice.accept`` (the handler runs on the client's thread)."""
        return self.aio.on_accept(handler)

    def on_busy(self, handler: Handler[VoiceBusy]) -> Handler[VoiceBusy]:
        """Handle every ``chat.voice.busy`` (the handler runs on the client's thread)."""
        return self.aio.on_busy(handler)

    def on_stop(self, handler: Handler[VoiceStop]) -> Handler[VoiceStop]:
        """Handle every ``chat.voice.stop`` (the handler runs on the client's thread)."""
        return self.aio.on_stop(handler)

    def on_summary(self, handler: Handler[VoiceSummary]) -> Handler[VoiceSummary]:
        """Handle every ``chat.voice.summary`` (the handler runs on the client's thread)."""
        return self.aio.on_summary(handler)


class Call:
    """Blocking :class:`parley.client.Call`: a call placed from this device or answered
    on it. ``aio`` is the asyncio call it follows."""

    def __init__(self, call: AsyncCall, runner: _LoopThread) -> None:
        self.aio = call
        self._runner = runner

    def __repr__(self) -> str:
        return f"<sync {self.aio!r}>"

    @property
    def call_id(self) -> str:
        """The call's id on the wire (the winner's, once this call lost glare)."""
        return self.aio.call_id

    @property
    def cid(self) -> str:
        """The conversation id."""
        return self.aio.cid

    @property
    def peer(self) -> IdentityId:
        """The identity on the other end."""
        return self.aio.peer

    @property
    def state(self) -> CallState:
        """Where the call is now: new, dialing, ringing, connected or ended."""
        return self.aio.state

    @property
    def record(self) -> CallRecord | None:
        """Set once the call has ended (``record.reason``, ``record.detail``)."""
        return self.aio.record

    def events(self, *, timeout: float | None = None) -> Iterator[CallUpdate]:
        """Every update of the call from its first (``Dialing``, ``Connected``,
        ``Ended``); ends after ``Ended``, or when the client closes."""
        return self._runner.iterate(self.aio.events(), timeout)

    def wait_ended(self, timeout: float | None = None) -> CallRecord:
        """Block until the call ends; its record. :class:`TimeoutError` past
        ``timeout``; :class:`StateError` if the client closed first."""
        return self._runner.run(_within(timeout, self.aio.wait_ended()))

    def hangup(self) -> None:
        """Hang up (decline a call still ringing here); nothing if it has ended."""
        self._runner.run(self.aio.hangup())

    def fail(self) -> None:
        """End the call ``failed`` (this side cannot go on)."""
        self._runner.run(self.aio.fail())


class IncomingCall(Call):
    """Blocking :class:`parley.client.IncomingCall`: a call ringing here."""

    aio: AsyncIncomingCall

    def __init__(self, call: AsyncIncomingCall, runner: _LoopThread) -> None:
        super().__init__(call, runner)

    @property
    def peer_device(self) -> DeviceId:
        """The caller's device that sent the start."""
        return self.aio.peer_device

    @property
    def peer_info(self) -> str:
        """The caller's session description (its offer)."""
        return self.aio.peer_info

    @property
    def data(self) -> dict[str, Any]:
        """What the start carried in ``data``."""
        return self.aio.data

    def accept(self, peer_info: str, data: Mapping[str, Any] | None = None) -> IncomingCall:
        """Answer with ``peer_info``; returns this call, connected. Raises what the
        asyncio ``accept`` raises (``IllegalTransition`` if it stopped ringing,
        ``NotPermitted`` if the caller does not accept our messages)."""
        self._runner.run(self.aio.accept(peer_info, data))
        return self

    def busy(self) -> None:
        """Turn the call down as busy."""
        self._runner.run(self.aio.busy())

    def decline(self) -> None:
        """Turn the call down as declined."""
        self._runner.run(self.aio.decline())


class Calls:
    """Blocking :class:`parley.client.Calls`: get it from :meth:`Client.calls`."""

    def __init__(self, config: PhoneConfig, runner: _LoopThread) -> None:
        self.config = config
        self._runner = runner
        self._aio: AsyncCalls | None = None
        self._views: weakref.WeakKeyDictionary[AsyncCall, Call] = weakref.WeakKeyDictionary()

    @property
    def aio(self) -> AsyncCalls:
        """The asyncio call service (there once the client connects)."""
        if self._aio is None:
            raise NotConnected("the calls service starts when the client connects")
        return self._aio

    @property
    def live(self) -> list[Call]:
        """The calls that have not ended: dialling, ringing, connected."""
        return [self._view(call) for call in self.aio.live]

    def place(
        self,
        recipient: str,
        peer_info: str,
        data: Mapping[str, Any] | None = None,
        *,
        lifetime: float | None = None,
        cid: str | None = None,
    ) -> Call:
        """Call ``recipient`` with ``peer_info`` (our offer); returns once the start is
        sent. Raises the relay's refusal (``NotPermitted``, ``UnknownIdentity``) when
        the start did not go out."""
        call = self._runner.run(
            self.aio.place(recipient, peer_info, data, lifetime=lifetime, cid=cid)
        )
        return self._view(call)

    def incoming(self, *, timeout: float | None = None) -> Iterator[IncomingCall]:
        """Calls ringing here, oldest first; ends when the client closes. ``timeout``:
        seconds to wait for each (then :class:`TimeoutError`, and the iteration ends)."""
        for call in self._runner.iterate(self.aio.incoming(), timeout):
            view = self._view(call)
            assert isinstance(view, IncomingCall)
            yield view

    def _view(self, call: AsyncCall) -> Call:
        view = self._views.get(call)
        if view is None:
            if isinstance(call, AsyncIncomingCall):
                view = IncomingCall(call, self._runner)
            else:
                view = Call(call, self._runner)
            self._views[call] = view
        return view


async def _within(timeout: float | None, work: Coroutine[Any, Any, T]) -> T:
    async with asyncio.timeout(timeout):
        return await work


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
        ca_file: str | os.PathLike[str] | None = None,
        ack_timeout: float = 10.0,
        message_lifetime: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.aio = AsyncClient(
            credentials,
            state_path=state_path,
            connector=connector,
            ca_file=ca_file,
            ack_timeout=ack_timeout,
            message_lifetime=message_lifetime,
            clock=clock,
        )
        self._runner = _LoopThread()
        self._started = False
        self.connections = Connections(self.aio.connections, self._runner)
        self._voice = Voice(self.aio.voice(), self._runner)
        self._calls: Calls | None = None

    @classmethod
    def from_credentials(
        cls,
        path: str | os.PathLike[str],
        *,
        state_path: str | os.PathLike[str] | None = None,
        connector: Connector | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        ack_timeout: float = 10.0,
        message_lifetime: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> Client:
        """A client for the credentials file at ``path``; its state file beside it
        (``<stem>.state.db``) unless ``state_path`` says otherwise."""
        return cls(
            Credentials.load(path),
            state_path=Credentials.default_state_path(path) if state_path is None else state_path,
            connector=connector,
            ca_file=ca_file,
            ack_timeout=ack_timeout,
            message_lifetime=message_lifetime,
            clock=clock,
        )

    @property
    def id(self) -> IdentityId:
        """This client's identity id."""
        return self.aio.id

    @property
    def device(self) -> DeviceId:
        """This client's device id."""
        return self.aio.device

    @property
    def rejected(self) -> Counter[str]:
        """Messages refused by the receive checks, counted by reason."""
        return self.aio.rejected

    def voice(self) -> Voice:
        """The Voice messages, blocking (the same object every time)."""
        return self._voice

    def calls(self, config: PhoneConfig | None = None) -> Calls:
        """The call service (the same object every time). ``config`` applies from the
        first call; give it before :meth:`connect`. A different one later raises
        :class:`StateError`."""
        if self._calls is None:
            self._calls = Calls(config or PhoneConfig(), self._runner)
            if self._runner.running:
                self._runner.run(self._start_calls())
        elif config is not None and config != self._calls.config:
            raise StateError("the calls service runs already, with another configuration")
        return self._calls

    def softphone(
        self,
        *,
        source: str = "silence",
        ice: IceConfig | None = None,
        media_timeout: float | None = None,
    ) -> BlockingSoftphone:
        """A softphone (calls with audio, :mod:`parley.media.blocking`) on this connected
        client; needs the media extra (``MediaUnavailable`` without it). The call
        configuration is that of :meth:`calls`."""
        from parley.media.blocking import MEDIA_TIMEOUT, Softphone, open_softphone

        calls = self.calls()
        calls.aio  # noqa: B018 - raises NotConnected before the client connects
        timeout = MEDIA_TIMEOUT if media_timeout is None else media_timeout
        phone = self._runner.run(open_softphone(self.aio, source, ice, timeout))
        return Softphone(phone, calls, self._runner)

    async def _start_calls(self) -> None:
        """On the client's thread: start the asyncio call service."""
        if self._calls is not None and self._calls._aio is None:
            self._calls._aio = self.aio.calls(self._calls.config)

    async def _connect(self) -> None:
        await self._start_calls()
        await self.aio.connect()

    def connect(self) -> None:
        """Start the client's thread, connect and authenticate."""
        if self._started:
            raise StateError("a client connects once; make a new one to connect again")
        self._started = True
        self._runner.start()
        try:
            self._runner.run(self._connect())
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
        """Revoke a device of this identity (see :meth:`parley.Client.revoke_device`)."""
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
