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
    def __init__(self, sender: Sender, handlers: Handlers) -> None:
        self._sender = sender
        self._handlers = handlers

    # -- senders -----------------------------------------------------------------

    async def setup(self, recipient: str, name: str, cid: str) -> VoiceSetup:
        claims = self._sender.claims(recipient)
        return await self._sender.send(VoiceSetup(**claims, cid=cid, data={"name": name}))

    async def start(
        self, recipient: str, cid: str, call_id: str, peer_info: str, data: Mapping[str, Any]
    ) -> VoiceStart:
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
        claims = self._sender.claims(recipient)
        return await self._sender.send(
            VoiceAccept(
                **claims, cid=cid, call_id=call_id, peer_info=peer_info, data=dict(data or {})
            )
        )

    async def busy(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceBusy:
        claims = self._sender.claims(recipient)
        return await self._sender.send(
            VoiceBusy(**claims, cid=cid, call_id=call_id, data=dict(data or {}))
        )

    async def stop(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceStop:
        claims = self._sender.claims(recipient)
        return await self._sender.send(
            VoiceStop(**claims, cid=cid, call_id=call_id, data=dict(data or {}))
        )

    async def summary(
        self, recipient: str, cid: str, call_id: str, data: Mapping[str, Any] | None = None
    ) -> VoiceSummary:
        claims = self._sender.claims(recipient)
        return await self._sender.send(
            VoiceSummary(**claims, cid=cid, call_id=call_id, data=dict(data or {}))
        )

    # -- subscriptions -------------------------------------------------------------

    def on_setup(self, handler: Handler[VoiceSetup]) -> Handler[VoiceSetup]:
        self._handlers.subscribe(VoiceSetup, handler)
        return handler

    def on_start(self, handler: Handler[VoiceStart]) -> Handler[VoiceStart]:
        self._handlers.subscribe(VoiceStart, handler)
        return handler

    def on_accept(self, handler: Handler[VoiceAccept]) -> Handler[VoiceAccept]:
        self._handlers.subscribe(VoiceAccept, handler)
        return handler

    def on_busy(self, handler: Handler[VoiceBusy]) -> Handler[VoiceBusy]:
        self._handlers.subscribe(VoiceBusy, handler)
        return handler

    def on_stop(self, handler: Handler[VoiceStop]) -> Handler[VoiceStop]:
        self._handlers.subscribe(VoiceStop, handler)
        return handler

    def on_summary(self, handler: Handler[VoiceSummary]) -> Handler[VoiceSummary]:
        self._handlers.subscribe(VoiceSummary, handler)
        return handler
