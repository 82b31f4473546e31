"""What an application holds of one call: :class:`Call` and :class:`IncomingCall`.

Both are views that :class:`~parley.client.calls.Calls` keeps up to date from its
phone's events. Their commands go to the phone through the service's runner, so the
state machine checks them: a command that does not fit the call raises a typed error
(:class:`~parley.errors.IllegalTransition`, :class:`~parley.errors.UnknownCall`) and
changes nothing.

A call's updates (:data:`CallUpdate`) are kept, few as they are, so :meth:`Call.events`
replays them from the first: an app that starts iterating late misses nothing, and
several iterators may follow one call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any, TypeAlias

import msgspec

from parley.client.machine import MachineRunner
from parley.errors import IllegalTransition, StateError, UnknownCall
from parley.ids import DeviceId, IdentityId
from parley.protocol.call import CallRecord, CallState
from parley.protocol.call_io import (
    Accept,
    Busy,
    Connected,
    Decline,
    Ended,
    Fail,
    Hangup,
    PhoneInput,
    Ringing,
)


class Dialing(msgspec.Struct, frozen=True, kw_only=True):
    """The relay stored our start for every device of ``peer``: they ring (those offline
    when they connect, while the ring lifetime lasts)."""

    call_id: str
    cid: str
    peer: IdentityId


CallUpdate: TypeAlias = Dialing | Connected | Ended
"""What :meth:`Call.events` yields: dialing (placed calls only), connected (the peer
accepted, or we did; ``peer_info`` is what the peer sent), ended (always last, once)."""

_STATE_AFTER: dict[type[CallUpdate], CallState] = {
    Dialing: CallState.DIALING,
    Connected: CallState.CONNECTED,
    Ended: CallState.ENDED,
}


class Call:
    """A call placed from this device, or answered on it.

    ``call_id`` is the call's id on the wire. It changes once in one case: when our
    attempt loses glare to the peer's (DESIGN.md §3), the service answers the peer's call
    at once and this object goes on as that call, under the winner's ``call_id``.
    ``record`` is set when the call ends.
    """

    def __init__(
        self,
        runner: MachineRunner[PhoneInput],
        *,
        call_id: str,
        cid: str,
        peer: IdentityId,
        state: CallState,
    ) -> None:
        self._runner = runner
        self.call_id = call_id
        self.cid = cid
        self.peer = peer
        self.state = state
        self.record: CallRecord | None = None
        self._updates: list[CallUpdate] = []
        self._changed = asyncio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call_id} {self.state} peer={self.peer}>"

    async def events(self) -> AsyncGenerator[CallUpdate, None]:
        """Every update of the call from its first; ends after :class:`Ended` (or when the
        client closes before the call ended)."""
        seen = 0
        while True:
            while seen < len(self._updates):
                update = self._updates[seen]
                seen += 1
                yield update
                if isinstance(update, Ended):
                    return
            if self._closed:
                return
            self._changed.clear()
            await self._changed.wait()

    async def wait_ended(self) -> CallRecord:
        """Wait for the end of the call; its record (``record.reason`` says why).

        Raises :class:`StateError` if the client closed without the call ending (it was
        still ringing here, or the relay was out of reach to hang it up).
        """
        async for _ in self.events():
            pass
        if self.record is None:
            raise StateError(f"the client closed while call {self.call_id} was {self.state}")
        return self.record

    async def hangup(self) -> None:
        """End the call: hang up a placed or answered call, decline one ringing here.

        Does nothing if the call has ended already (a hang-up may cross the peer's).
        """
        if self.record is not None:
            return
        now = self._runner.now()
        command = (
            Decline(now=now, call_id=self.call_id)
            if self.state is CallState.RINGING
            else Hangup(now=now, call_id=self.call_id)
        )
        try:
            await self._runner.feed(command)
        except (IllegalTransition, UnknownCall):
            if self.record is not None:
                return
            if not (isinstance(command, Decline) and self.state is CallState.CONNECTED):
                raise
            # Answered meanwhile (an accept() whose caller gave up still goes through).
            await self._runner.feed(Hangup(now=self._runner.now(), call_id=self.call_id))

    async def fail(self) -> None:
        """End the call as ``failed`` because this side cannot go on (its media did not
        come up, the peer's session description is unusable): the peer gets a stop with
        reason ``failed``. Does nothing if the call has ended already."""
        if self.record is not None:
            return
        try:
            await self._runner.feed(Fail(now=self._runner.now(), call_id=self.call_id))
        except (IllegalTransition, UnknownCall):
            if self.record is None:
                raise

    # -- kept up to date by the service ------------------------------------------------

    def _update(self, update: CallUpdate) -> None:
        self._updates.append(update)
        self.state = _STATE_AFTER[type(update)]
        if isinstance(update, Ended):
            self.record = update.record
        self._changed.set()

    def _rename(self, call_id: str) -> None:
        self.call_id = call_id

    def _close(self) -> None:
        self._closed = True
        self._changed.set()


class IncomingCall(Call):
    """A call ringing here: answer it with :meth:`accept`, or turn it down with
    :meth:`busy` or :meth:`decline`. It may also end while ringing (the caller hung up,
    it timed out, another device of ours answered): :meth:`events` and
    :meth:`wait_ended` say so.

    ``peer_info`` is the caller's session description (its offer), ``data`` what its
    start carried (the wire's own keys, such as ``lifetime``, included).
    """

    def __init__(self, runner: MachineRunner[PhoneInput], ringing: Ringing) -> None:
        super().__init__(
            runner,
            call_id=ringing.call_id,
            cid=ringing.cid,
            peer=ringing.peer,
            state=CallState.RINGING,
        )
        self.peer_device: DeviceId = ringing.peer_device
        self.peer_info = ringing.peer_info
        self.data = ringing.data

    async def accept(self, peer_info: str, data: Mapping[str, Any] | None = None) -> Call:
        """Answer with ``peer_info`` (our session description); returns this call, now
        connected. The first device of ours to accept has the call; the others end
        ``answered_elsewhere``. Raises :class:`IllegalTransition` if the call stopped
        ringing meanwhile (its :class:`Ended` says why).

        If the accept does not reach the caller (it has not permitted us:
        :class:`~parley.errors.NotPermitted`; or the relay is out of reach), that error
        is raised and the call ends ``failed`` here, the refusal in ``record.detail``;
        it never connected."""
        await self._runner.feed(
            Accept(
                now=self._runner.now(),
                call_id=self.call_id,
                peer_info=peer_info,
                data=dict(data or {}),
            ),
            raise_refusal=True,
        )
        return self

    async def busy(self) -> None:
        """Turn the call down as busy, for every device of ours."""
        await self._runner.feed(Busy(now=self._runner.now(), call_id=self.call_id))

    async def decline(self) -> None:
        """Turn the call down (reason ``declined``), for every device of ours."""
        await self._runner.feed(Decline(now=self._runner.now(), call_id=self.call_id))
