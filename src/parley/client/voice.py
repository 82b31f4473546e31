"""The voice service: send and subscribe to the six ``chat.voice.*`` messages.

Argument orders are those of the public SDKs (DESIGN.md §2). Every sender returns the
typed payload it signed once the relay has acknowledged it, and raises
:class:`DeliveryTimeout` or the relay's typed refusal (:class:`NotPermitted`,
:class:`UnknownIdentity`, ...).

Subscriptions take ``handler(issuer, payload)``, a plain or ``async`` function, either
called directly or used as a decorator; one handler per type, the latest wins.
Handlers run one at a time, in delivery order, on the client's event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parley.client.handlers import Handler, Handlers
from parley.client.sender import Sender
from parley.protocol.messages import (
    VoiceAccept,
    VoiceBusy,
    VoiceSetup,
    VoiceStart,
    VoiceStop,
    VoiceSummary,
)


class Voice:
    """The Voice messages of one client: ``client.voice()``. The senders sign, encrypt and send one
    message and return it once the relay stored it; the ``on_*`` subscriptions take one handler
    per type, ``handler(issuer, payload)``, a plain function or a coroutine, and work as
    decorators (a later subscription replaces the earlier one)."""

    def __init__(self, sender: Sender, handlers: Handlers) -> None:
        self._sender = sender
        self._handlers = handlers

    # -- senders -----------------------------------------------------------------

    async def setup(self, recipient: str, name: str, cid: str) -> VoiceSetup:
        """Send ``chat.voice.setup`` with ``data: {"name": name}`` to ``recipient``."""
        claims = self._sender.claims(recipient)
        return await self._sender.send(VoiceSetup(**claims, cid=cid, data={"name": name}))

    async def start(
        self, recipient: str, cid: str, call_id: str, peer_info: str, data: Mapping[str, Any]
    ) -> VoiceStart:
        """Send ``chat.voice.start``: the call ``call_id`` in conversation ``cid``, with
        ``peer_info`` (the offer) and ``data``."""
        claims = self._sender.claims(recipient)
        return await self._sender.send(
            VoiceStart(**claims, cid=cid, call_id=call_id, peer_info=peer_info, data=dict(data))
        )

    async def accept(
        self,
        recipient: str,
        cid: str,
        call_id: str,
        peer_info: str,
        data: Mapping[str, Any] | None = None,
    ) -> VoiceAccept:
        """Send ``chat.voice.accept`` for ``call_id`` with ``peer_info`` (the answer)."""
        claims = self._sender.claims(recipient)
        return await self._sender.send(
            VoiceAccept(
                **claims, cid=cid, call_id=call_id, peer_info=peer_info, data=dict(data or {})
            )
        )

    async def busy(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceBusy:
        """Send ``chat.voice.busy`` for ``call_id``; ``data`` may say why (``reason``)."""
        claims = self._sender.claims(recipient)
        return await self._sender.send(
            VoiceBusy(**claims, cid=cid, call_id=call_id, data=dict(data or {}))
        )

    async def stop(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceStop:
        """Send ``chat.voice.stop`` (a hang-up) for ``call_id``; ``data`` may say why."""
        claims = self._sender.claims(recipient)
        return await self._sender.send(
            VoiceStop(**claims, cid=cid, call_id=call_id, data=dict(data or {}))
        )

    async def summary(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceSummary:
        """Send ``chat.voice.summary`` for ``call_id``."""
        claims = self._sender.claims(recipient)
        return await self._sender.send(
            VoiceSummary(**claims, cid=cid, call_id=call_id, data=dict(data or {}))
        )

    # -- subscriptions -------------------------------------------------------------

    def on_setup(self, handler: Handler[VoiceSetup]) -> Handler[VoiceSetup]:
        """Handle every ``chat.voice.setup`` received; returns ``handler``."""
        self._handlers.subscribe(VoiceSetup, handler)
        return handler

    def on_start(self, handler: Handler[VoiceStart]) -> Handler[VoiceStart]:
        """Handle every ``chat.voice.start`` received; returns ``handler``."""
        self._handlers.subscribe(VoiceStart, handler)
        return handler

    def on_accept(self, handler: Handler[VoiceAccept]) -> Handler[VoiceAccept]:
        """Handle every ``chat.voice.accept`` received; returns ``handler``."""
        self._handlers.subscribe(VoiceAccept, handler)
        return handler

    def on_busy(self, handler: Handler[VoiceBusy]) -> Handler[VoiceBusy]:
        """Handle every ``chat.voice.busy`` received; returns ``handler``."""
        self._handlers.subscribe(VoiceBusy, handler)
        return handler

    def on_stop(self, handler: Handler[VoiceStop]) -> Handler[VoiceStop]:
        """Handle every ``chat.voice.stop`` received; returns ``handler``."""
        self._handlers.subscribe(VoiceStop, handler)
        return handler

    def on_summary(self, handler: Handler[VoiceSummary]) -> Handler[VoiceSummary]:
        """Handle every ``chat.voice.summary`` received; returns ``handler``."""
        self._handlers.subscribe(VoiceSummary, handler)
        return handler
