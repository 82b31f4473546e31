"""The permissions service: an identity only accepts messages from identities it permits."""

from __future__ import annotations

from parley.client.connection import Connection
from parley.protocol.frames import Connections as ConnectionsFrame
from parley.protocol.frames import Done, ListConnections, Permit, Unpermit


class Connections:
    """Who may send to this identity: ``client.connections``. An identity receives messages only
    from the identities it permits; the relay refuses anything else with ``NotPermitted`` to the
    sender."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def permit(self, identity: str) -> None:
        """Accept messages from ``identity`` from now on."""
        await self._connection.request(lambda ref: Permit(ref=ref, identity=identity), Done)

    async def revoke(self, identity: str) -> None:
        """Stop accepting messages from ``identity``."""
        await self._connection.request(lambda ref: Unpermit(ref=ref, identity=identity), Done)

    async def list(self) -> list[str]:
        """The identities this identity permits."""
        reply = await self._connection.request(
            lambda ref: ListConnections(ref=ref), ConnectionsFrame
        )
        return list(reply.identities)
