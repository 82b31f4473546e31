"""The parties of proxied calls in tests: plain SDK clients, as the public docs' peers."""

from __future__ import annotations

from tests.client.helpers import Received

from parley.client import Client
from parley.protocol.messages import Message


class Party:
    """An operator or a customer: a plain SDK client recording what reaches it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.voice = client.voice()
        self.got = Received()
        for subscribe in (
            self.voice.on_start,
            self.voice.on_accept,
            self.voice.on_busy,
            self.voice.on_stop,
        ):
            subscribe(self.got)

    @property
    def id(self) -> str:
        return self.client.id

    async def next(self, typ: str) -> Message:
        """The next message that reached this party, which must be of type ``typ``."""
        _, message = await self.got.next()
        assert message.typ.value == f"chat.voice.{typ}", (typ, message)
        return message
