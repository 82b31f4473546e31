"""The phone page's calls: page messages in, the call API's commands out, and back.

The page is only the media endpoint; this side holds the calls (``client.calls()``) and
checks every session description either way with ``protocol.session_description``:

- the page's own offer or answer is cut to the allowed host candidates
  (``ice.restrict_candidates``) and checked before it goes into ``peer_info``; one that
  does not pass is an error to the page, and nothing changes;
- the peer's offer or answer is checked before the page sees it; one that does not pass
  ends the call ``failed`` (the peer gets a stop) and the page is told why.

One call at a time is the page's: a call ringing while another is in progress gets busy.
Should the page's call and the peer's cross (glare, DESIGN.md §3) and the peer's win,
the page answers the peer's offer on its own connection: its offer is no answer to it.
A call that rings while no page is open keeps ringing and is shown to the next page
that connects. A page that goes away hangs up the call it was placing or in: its media
went with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from parley.client.phone_call import Call, Dialing, IncomingCall
from parley.errors import (
    InvalidSessionDescription,
    ParleyError,
    StateError,
    UnknownCall,
)
from parley.ice import IceConfig, restrict_candidates
from parley.ids import IdentityId, is_valid_id
from parley.protocol import session_description
from parley.protocol.call import LIVE_STATES, CallState
from parley.protocol.call_io import Connected, Ended
from parley.protocol.session_description import SdpType
from parley.web import messages as wire
from parley.web.messages import MalformedPageMessage

if TYPE_CHECKING:
    from parley.client.calls import Calls
    from parley.client.client import Client

log = logging.getLogger(__name__)

PageSend = Callable[[wire.ServerMessage], Awaitable[None]]
"""Sends one message to the page that is connected (and gives up quietly if it left)."""

GLARE_ANSWER_TIMEOUT: Final = 15.0  # seconds the page has to answer an offer that won glare


class PhoneBridge:
    """One phone's calls as its page sees them. :meth:`start` it on the client's loop;
    :meth:`attach` the page that connects, :meth:`handle` what it sends, :meth:`detach`
    it when it goes; :meth:`close` at the end."""

    def __init__(self, client: Client, ice: IceConfig) -> None:
        self.identity: IdentityId = client.id
        self.ice = ice
        self._calls: Calls = client.calls()
        self._send: PageSend | None = None
        self.current: Call | None = None
        """The call the page shows: placed, ringing or in progress; None when idle."""
        self._placing = False
        self._placed = asyncio.Event()  # set whenever no place() is under way
        self._placed.set()
        self._offers: dict[str, str] = {}  # call_id -> the caller's offer SDP, while ringing
        self._details: dict[str, str] = {}  # call_id -> why this side failed the call
        self._glare: dict[str, asyncio.Future[str]] = {}  # call_id -> the page's answer
        self._answered_glare: set[str] = set()  # calls that lost glare, answered by the page
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifetime -------------------------------------------------------------------------

    def start(self) -> None:
        self._spawn(self._ring(), "parley-web-ring")

    async def close(self) -> None:
        """Hang up the call in progress, stop taking calls, end every task."""
        call = self.current
        if call is not None and call.state in (CallState.DIALING, CallState.CONNECTED):
            with contextlib.suppress(ParleyError):
                await call.hangup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the page ---------------------------------------------------------------------------

    async def attach(self, send: PageSend) -> None:
        """A page connected: tell it who it is, and the call ringing here, if one is."""
        self._send = send
        await send(wire.Hello(identity=self.identity, ice=self.ice.to_json()))
        call = self.current
        if isinstance(call, IncomingCall) and call.state is CallState.RINGING:
            offer = self._offers.get(call.call_id)
            if offer is not None:
                await send(wire.Incoming(call_id=call.call_id, peer=call.peer, sdp=offer))

    async def detach(self) -> None:
        """The page went: the call it was placing or in has lost its media, so hang up."""
        self._send = None
        for answer in self._glare.values():
            if not answer.done():
                answer.set_exception(StateError("the phone page closed"))
        call = self.current
        if call is not None and call.state in (CallState.DIALING, CallState.CONNECTED):
            log.info("call %s: the phone page closed; hanging up", call.call_id)
            with contextlib.suppress(ParleyError):
                await call.hangup()

    async def handle(self, data: str | bytes) -> None:
        """One message from the page. One that does not decode, or asks for what the
        call's state does not allow, gets an :class:`~parley.web.messages.Error` back and
        changes nothing."""
        try:
            message = wire.decode(data)
        except MalformedPageMessage as exc:
            await self._tell(wire.Error(message=str(exc), request=wire.tag_of(data)))
            return
        try:
            await self._dispatch(message)
        except ParleyError as exc:
            log.info("phone page request %s refused: %s", type(message).__name__, exc)
            await self._tell(
                wire.Error(
                    message=str(exc),
                    request=wire.tag(message),
                    call_id=getattr(message, "call_id", None),
                )
            )

    async def _dispatch(self, message: wire.PageMessage) -> None:
        match message:
            case wire.Place():
                await self._place(message)
            case wire.Accept():
                await self._accept(message)
            case wire.Decline():
                await self._ringing(message.call_id).decline()
            case wire.Busy():
                await self._ringing(message.call_id).busy()
            case wire.Hangup():
                await self._live(message.call_id).hangup()
            case wire.MediaFailed():
                call = self._live(message.call_id)
                await self._fail(call, f"the page's media failed: {message.detail or 'no reason'}")

    async def _place(self, message: wire.Place) -> None:
        if self._placing or (self.current is not None and self.current.state in LIVE_STATES):
            raise StateError("a call is in progress; hang it up first")
        if not is_valid_id(message.peer):
            raise MalformedPageMessage(f"{message.peer!r} is not an identity id")
        if message.peer == self.identity:
            raise StateError("this phone cannot call its own identity")
        peer_info = self._own(SdpType.OFFER, message.sdp)
        self._placing = True
        self._placed.clear()
        try:
            call = await self._calls.place(message.peer, peer_info, on_glare=self._answer_glare)
            self.current = call
        finally:
            self._placing = False
            self._placed.set()
        self._spawn(self._follow(call, placed=True), f"parley-web-call-{call.call_id}")

    async def _accept(self, message: wire.Accept) -> None:
        glare = self._glare.get(message.call_id)
        if glare is not None and not glare.done():
            try:
                glare.set_result(self._own(SdpType.ANSWER, message.sdp))
            except InvalidSessionDescription as exc:
                glare.set_exception(exc)  # the call fails now, not at the timeout
                raise
            return
        call = self._ringing(message.call_id)
        await call.accept(self._own(SdpType.ANSWER, message.sdp))

    def _own(self, kind: SdpType, sdp: str) -> str:
        """``peer_info`` for the page's own SDP, offering only the allowed host candidates."""
        restricted = _end_of_candidates(restrict_candidates(sdp, self.ice))
        try:
            if kind is SdpType.OFFER:
                return session_description.offer(restricted)
            return session_description.answer(restricted)
        except InvalidSessionDescription as exc:
            raise InvalidSessionDescription(f"the page's {kind.value} is unusable: {exc}") from None

    def _ringing(self, call_id: str) -> IncomingCall:
        call = self.current
        if (
            not isinstance(call, IncomingCall)
            or call.call_id != call_id
            or call.state is not CallState.RINGING
        ):
            raise UnknownCall(f"no call {call_id} is ringing here")
        return call

    def _live(self, call_id: str) -> Call:
        call = self.current
        if call is None or call.call_id != call_id or call.state not in LIVE_STATES:
            raise UnknownCall(f"no call {call_id} is in progress here")
        return call

    async def _tell(self, message: wire.ServerMessage) -> None:
        if self._send is not None:
            await self._send(message)

    # -- calls ------------------------------------------------------------------------------

    async def _ring(self) -> None:
        async for incoming in self._calls.incoming():
            busy = self._placing or (self.current is not None and self.current.state in LIVE_STATES)
            if busy:
                log.info("call %s from %s: busy with another call", incoming.call_id, incoming.peer)
                with contextlib.suppress(ParleyError):
                    await incoming.busy()
                continue
            self.current = incoming
            self._spawn(self._follow(incoming, placed=False), f"parley-web-call-{incoming.call_id}")
            try:
                offer = session_description.parse(incoming.peer_info, SdpType.OFFER)
            except InvalidSessionDescription as exc:
                await self._fail(incoming, f"the caller's offer is unusable: {exc}")
                continue
            self._offers[incoming.call_id] = offer.sdp
            await self._tell(
                wire.Incoming(call_id=incoming.call_id, peer=incoming.peer, sdp=offer.sdp)
            )

    async def _follow(self, call: Call, *, placed: bool) -> None:
        """Tell the page what happens to ``call``, checking the peer's answer first."""
        async for update in call.events():
            if isinstance(update, Dialing):
                await self._tell(wire.Dialing(call_id=update.call_id, peer=call.peer))
            elif isinstance(update, Connected):
                self._offers.pop(update.call_id, None)
                answer: str | None = None
                # A call that lost glare was answered by us (the page's answer): the
                # peer_info it connected with is the peer's offer, not an answer.
                if placed and update.call_id not in self._answered_glare:
                    try:
                        answer = session_description.parse(update.peer_info, SdpType.ANSWER).sdp
                    except InvalidSessionDescription as exc:
                        await self._fail(call, f"the peer's answer is unusable: {exc}")
                        continue
                self._answered_glare.discard(update.call_id)
                await self._tell(wire.Connected(call_id=update.call_id, peer=call.peer, sdp=answer))
            elif isinstance(update, Ended):
                if self.current is call:
                    self.current = None
                self._offers.pop(update.call_id, None)
                self._answered_glare.discard(update.call_id)
                record = update.record
                await self._tell(
                    wire.Ended(
                        call_id=update.call_id,
                        peer=call.peer,
                        reason=record.reason.value,
                        detail=self._details.pop(update.call_id, ""),
                        duration=record.duration,
                    )
                )

    async def _answer_glare(self, peer_info: str) -> str:
        """The peer's call won glare over the page's: the page answers its offer (its own
        offer is no answer to it). Raising here ends the call ``failed``."""
        await self._placed.wait()  # glare may beat place() to its return: wait for the call
        call = self.current
        if call is None or self._send is None:
            raise StateError("no phone page is open to answer the call that won glare")
        try:
            offer = session_description.parse(peer_info, SdpType.OFFER)
        except InvalidSessionDescription as exc:
            self._details[call.call_id] = f"the offer that won glare is unusable: {exc}"
            raise
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._glare[call.call_id] = answer
        await self._tell(
            wire.Incoming(call_id=call.call_id, peer=call.peer, sdp=offer.sdp, glare=True)
        )
        try:
            async with asyncio.timeout(GLARE_ANSWER_TIMEOUT):
                answer_info = await answer
        except TimeoutError:
            raise StateError("the phone page did not answer the call that won glare") from None
        finally:
            del self._glare[call.call_id]
        self._answered_glare.add(call.call_id)
        return answer_info

    async def _fail(self, call: Call, why: str) -> None:
        log.warning("call %s with %s failed: %s", call.call_id, call.peer, why)
        self._details[call.call_id] = why
        with contextlib.suppress(ParleyError):
            await call.fail()

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s crashed", task.get_name(), exc_info=task.exception())


def _end_of_candidates(sdp: str) -> str:
    """``sdp`` with each media section marked as holding all its candidates
    (``a=end-of-candidates``, RFC 8840 §8.2), as DESIGN.md §2 wants of a full SDP. The
    page sends its SDP only once gathering completed, but browsers leave the mark out."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(newline)
    ending = [""] if lines and lines[-1] == "" else []
    body = lines[: len(lines) - len(ending)]
    out: list[str] = []
    in_media = marked = False
    for line in body:
        if line.startswith("m="):
            if in_media and not marked:
                out.append("a=end-of-candidates")
            in_media, marked = True, False
        elif line == "a=end-of-candidates":
            marked = True
        out.append(line)
    if in_media and not marked:
        out.append("a=end-of-candidates")
    return newline.join(out + ending)
