"""The call service: place, answer and end calls; the protocol rules are the phone's.

::

    calls = client.calls()
    call = await calls.place(recipient, peer_info)
    async for event in call.events(): ...     # Dialing, Connected, Ended
    await call.hangup()

    async for incoming in calls.incoming():
        await incoming.accept(peer_info)       # or .busy() / .decline()

It runs a sans-I/O :class:`~parley.protocol.call_phone.Phone` on the client with a
:class:`~parley.client.machine.MachineRunner`, on the same voice messages as
``client.voice()``: the app's ``on_*`` handlers keep working beside it (the phone
observes every message; handlers are the app's and see what they always saw).

Configuration (ring lifetime, grace, auto-busy) is a :class:`PhoneConfig` given to the
first ``client.calls(config)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from parley.client.machine import Event, MachineRunner
from parley.client.phone_call import Call, Dialing, IncomingCall
from parley.errors import ParleyError, StateError
from parley.ids import IdentityId
from parley.protocol.call import CallState
from parley.protocol.call_io import (
    Accept,
    Connected,
    Ended,
    Fail,
    Output,
    PhoneInput,
    Place,
    Ringing,
)
from parley.protocol.call_phone import Phone, PhoneConfig

if TYPE_CHECKING:
    from parley.client.client import Client

log = logging.getLogger(__name__)


GlareAnswerer: TypeAlias = Callable[[str], Awaitable[str]]
"""Given the offer of the call that won glare over ours, our answer to it."""


class _Offer(NamedTuple):
    """What the app placed a call with, to answer with should the call lose glare:
    ``peer_info`` as it is, or what ``answerer`` makes of the winning call's offer."""

    peer_info: str
    data: dict[str, Any]
    answerer: GlareAnswerer | None = None


class _AnsweringPhone:
    """The phone as the runner drives it, plus the app's part of glare in the same step.

    When our attempt loses glare, the phone rings the winning call with ``replaces`` set.
    The app wanted that very call, so it is accepted here at once with the offer the app
    placed its own with: accepting later, from a task, could find the call stopped or
    crossed by a hang-up. ``on_replaced(old, new)`` runs before the runner hands any
    output of the step to the service, so the app's call moves over first.
    """

    def __init__(
        self,
        phone: Phone,
        on_replaced: Callable[[str, str], None],
        answer_later: Callable[[Ringing, _Offer], None],
    ) -> None:
        self._phone = phone
        self._on_replaced = on_replaced
        self._answer_later = answer_later
        self.offers: dict[str, _Offer] = {}

    def next_deadline(self) -> float | None:
        return self._phone.next_deadline()

    def handle(self, event: PhoneInput) -> list[Output]:
        outputs = self._phone.handle(event)
        for output in list(outputs):
            if isinstance(output, Ringing) and output.replaces is not None:
                offer = self.offers.get(output.replaces)
                if offer is None:
                    continue
                self._on_replaced(output.replaces, output.call_id)
                if offer.answerer is not None:
                    # A fresh answer takes I/O (a media stack gathering candidates):
                    # it is accepted once ready, or the call fails.
                    self._answer_later(output, offer)
                    continue
                outputs += self._phone.handle(
                    Accept(
                        now=event.now,
                        call_id=output.call_id,
                        peer_info=offer.peer_info,
                        data=offer.data,
                    )
                )
        for output in outputs:
            # Only a call still dialling can lose glare.
            if isinstance(output, Connected | Ended):
                self.offers.pop(output.call_id, None)
        return outputs


class Calls:
    """Every call of this device. Get it from :meth:`Client.calls`."""

    def __init__(self, client: Client, config: PhoneConfig, *, clock: Callable[[], float]) -> None:
        self.config = config
        self._machine = _AnsweringPhone(
            Phone(client.id, client.device, config), self._replaced, self._answer_glare
        )
        self._runner: MachineRunner[PhoneInput] = MachineRunner(
            client, self._machine, self._on_event, clock=clock
        )
        # By call_id; a call that lost glare is here under both ids until its old one ends.
        self._calls: dict[str, Call] = {}
        self._waiting: OrderedDict[str, IncomingCall] = OrderedDict()
        self._arrived = asyncio.Event()
        self._glare_answers: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def live(self) -> list[Call]:
        """The calls of this device that have not ended: dialling, ringing, connected."""
        return list({id(call): call for call in self._calls.values()}.values())

    def start(self) -> None:
        """Start observing messages, presence and time (on the client's event loop)."""
        self._runner.start()

    async def place(
        self,
        recipient: str,
        peer_info: str,
        data: Mapping[str, Any] | None = None,
        *,
        lifetime: float | None = None,
        cid: str | None = None,
        on_glare: GlareAnswerer | None = None,
    ) -> Call:
        """Call ``recipient`` with ``peer_info`` (our offer); returns once the start is
        sent. ``lifetime``: ring for this long (default ``config.ring_lifetime``);
        ``cid``: the conversation id (default: a new random one).

        Should the peer call us at the same moment and win glare, this call goes on as
        the peer's, accepted with ``peer_info`` as it is; or, with ``on_glare``, with
        what ``await on_glare(peer_offer)`` returns (a media stack answers the peer's
        offer: our own offer is no answer to it). If ``on_glare`` raises, the call
        ends ``failed``.

        A start that does not go out raises what stopped it: the relay's refusal
        (:class:`~parley.errors.NotPermitted` when ``recipient`` has not permitted us,
        :class:`~parley.errors.UnknownIdentity`), or
        :class:`~parley.errors.DeliveryTimeout` /
        :class:`~parley.errors.RelayConnectionError`. Nothing rings then; the attempt is
        over (ended ``failed``, the refusal in its record's ``detail``).
        """
        if self._closed:
            raise StateError("the calls service is closed")
        call_id = uuid.uuid4().hex
        cid = uuid.uuid4().hex if cid is None else cid
        call = Call(
            self._runner, call_id=call_id, cid=cid, peer=IdentityId(recipient), state=CallState.NEW
        )
        offer = _Offer(peer_info, dict(data or {}), on_glare)
        self._calls[call_id] = call
        self._machine.offers[call_id] = offer
        try:
            await self._runner.feed(
                Place(
                    now=self._runner.now(),
                    recipient=call.peer,
                    cid=cid,
                    call_id=call_id,
                    peer_info=peer_info,
                    data=offer.data,
                    lifetime=lifetime,
                ),
                raise_refusal=True,
            )
        except ParleyError:  # refused by the phone, or the start did not go out
            self._calls.pop(call_id, None)
            self._machine.offers.pop(call_id, None)
            raise
        # feed() returns once the start is acknowledged, and nothing else reached the
        # phone since (no await in between), so Dialing comes before any other update.
        if call.state is CallState.NEW:
            call._update(Dialing(call_id=call_id, cid=cid, peer=call.peer))
        return call

    async def incoming(self) -> AsyncGenerator[IncomingCall, None]:
        """Calls ringing here, oldest first, from before the iteration began too; ends
        when the client closes. Each call goes to one iterator; a call that stopped
        ringing before it was taken is skipped."""
        while not self._closed:
            if self._waiting:
                _, call = self._waiting.popitem(last=False)
                yield call
                continue
            self._arrived.clear()
            await self._arrived.wait()

    async def close(self, *, hang_up: bool) -> None:
        """Stop; with ``hang_up``, first end the calls this device dials or is in, so their
        peers hear it now rather than after the grace period. Calls still ringing here are
        left alone: another device of ours may answer them."""
        if self._closed:
            return
        self._closed = True
        if hang_up:
            for call in self.live:
                if call.state in (CallState.DIALING, CallState.CONNECTED):
                    with contextlib.suppress(ParleyError):
                        await call.hangup()
        for task in list(self._glare_answers):
            task.cancel()
        await asyncio.gather(*self._glare_answers, return_exceptions=True)
        await self._runner.close()
        for call in self._calls.values():
            call._close()
        self._arrived.set()

    # -- from the runner --------------------------------------------------------------

    def _replaced(self, old: str, new: str) -> None:
        call = self._calls.get(old)
        if call is not None:
            log.info("call %s lost glare; it goes on as %s", old, new)
            self._calls[new] = call
            call._rename(new)

    def _answer_glare(self, ringing: Ringing, offer: _Offer) -> None:
        task = asyncio.ensure_future(self._accept_glare(ringing, offer))
        self._glare_answers.add(task)
        task.add_done_callback(self._glare_answers.discard)

    async def _accept_glare(self, ringing: Ringing, offer: _Offer) -> None:
        assert offer.answerer is not None
        call_id = ringing.call_id
        try:
            peer_info = await offer.answerer(ringing.peer_info)
        except Exception as exc:
            log.warning("call %s: no answer to the offer that won glare: %s", call_id, exc)
            with contextlib.suppress(StateError):
                await self._runner.feed(Fail(now=self._runner.now(), call_id=call_id))
            return
        try:
            await self._runner.feed(
                Accept(
                    now=self._runner.now(), call_id=call_id, peer_info=peer_info, data=offer.data
                )
            )
        except StateError as exc:  # it stopped ringing while the answer was made
            log.info("call %s ended before its answer was ready: %s", call_id, exc)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Ringing):
            if event.call_id not in self._calls:  # else: our own call, after glare
                incoming = IncomingCall(self._runner, event)
                self._calls[event.call_id] = incoming
                self._waiting[event.call_id] = incoming
                self._arrived.set()
            return
        call = self._calls.get(event.call_id)
        if call is None:
            return
        if isinstance(event, Ended):
            del self._calls[event.call_id]
            self._waiting.pop(event.call_id, None)
            if call.call_id != event.call_id:
                return  # the attempt that lost glare: the call goes on under its new id
        call._update(event)
