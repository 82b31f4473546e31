"""Identities and devices: register a new identity, add a device, revoke a device.

Each is a signed entry of the identity's key chain (:mod:`parley.protocol.keychain`):
the genesis entry for a new identity, then add/revoke entries signed by a device that
is active at that point. Every entry is checked against the freshly fetched chain
before it is sent, so a mistake fails here with a :class:`KeyChainError` that says why.
"""

from __future__ import annotations

import asyncio
import logging

from parley.client.connection import (
    Connection,
    Connector,
    credentials_connector,
    expect_challenge,
    recv_frame,
    relay_error,
)
from parley.client.directory import fetch_chain
from parley.credentials import Credentials
from parley.crypto.keys import SigningKey, VerifyKey
from parley.errors import (
    CredentialsError,
    DeliveryTimeout,
    KeyChainError,
    MalformedFrame,
)
from parley.ids import DeviceId, IdentityId, is_valid_id, new_device_id, new_identity_id
from parley.protocol.frames import AppendKey, Done, Error, Register, Registered, encode
from parley.protocol.keychain import KeyChain, KeyOp, genesis_entry, make_entry

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0


def new_identity(
    relay_url: str,
    name: str | None = None,
    identity_id: str | None = None,
    *,
    ca_file: str | None = None,
) -> Credentials:
    """The credentials of a new identity and its first device, made here and not yet
    registered (:func:`register`): the key never leaves this machine, so it can be
    saved before the relay hears of it.

    ``identity_id`` defaults to a fresh random id; an invalid one raises
    :class:`CredentialsError`. ``relay_url`` is checked when connecting
    (:func:`~parley.client.connection.relay_urls`); ``ca_file`` is the CA that signs a
    ``wss://`` relay's certificate, if the system does not trust it (kept in the
    credentials, and given to every device added from them).
    """
    identity = IdentityId(identity_id) if identity_id is not None else new_identity_id()
    if not is_valid_id(identity):
        raise CredentialsError(f"identity id {identity!r} must match [A-Za-z0-9._-]{{1,64}}")
    return Credentials(
        identity=identity,
        device=new_device_id(),
        secret_key=SigningKey.generate(),
        relay_url=relay_url,
        name=name,
        ca_file=ca_file,
    )


async def register(
    credentials: Credentials,
    connector: Connector | None = None,
    *,
    ack_timeout: float = DEFAULT_TIMEOUT,
    token: str | None = None,
) -> None:
    """Register the identity of ``credentials`` (from :func:`new_identity`) with its
    genesis entry. An identity by that id already there (this one included: each call
    signs a new genesis, with its own time) raises :class:`IdentityExists`.

    ``token``: an invitation token (``parley relay invite``), for a relay that registers
    invited identities only; a relay that refuses raises :class:`RegistrationRefused`."""
    identity, device = credentials.identity, credentials.device
    entry = genesis_entry(identity, device, credentials.secret_key)
    transport = await (connector or credentials_connector(credentials))()
    try:
        async with asyncio.timeout(ack_timeout):
            await expect_challenge(transport)
            await transport.send(
                encode(Register(ref=1, entry=entry, name=credentials.name, token=token))
            )
            reply = await recv_frame(transport)
    except TimeoutError:
        raise DeliveryTimeout(f"the relay did not answer within {ack_timeout:g} s") from None
    finally:
        await transport.close()
    if isinstance(reply, Error):
        raise relay_error(reply)
    if not isinstance(reply, Registered) or reply.identity != identity:
        raise MalformedFrame(f"expected registered({identity}), got {reply!r}")
    log.info("registered identity %s with device %s", identity, device)


async def register_identity(
    relay_url: str,
    name: str | None = None,
    identity_id: str | None = None,
    connector: Connector | None = None,
    *,
    ack_timeout: float = DEFAULT_TIMEOUT,
    ca_file: str | None = None,
    token: str | None = None,
) -> Credentials:
    """Create a key and a device, and register a new identity with its genesis entry
    (:func:`new_identity` then :func:`register`; to save the key before registering,
    call those two).

    ``identity_id`` defaults to a fresh random id. Registering the same genesis twice is
    harmless; another identity by that id raises :class:`IdentityExists`.
    """
    credentials = new_identity(relay_url, name=name, identity_id=identity_id, ca_file=ca_file)
    await register(credentials, connector, ack_timeout=ack_timeout, token=token)
    return credentials


def new_device(credentials: Credentials) -> Credentials:
    """The credentials of a new device of ``credentials``' identity, made here and not
    yet added to its key chain (:func:`register_device`)."""
    return Credentials(
        identity=credentials.identity,
        device=new_device_id(),
        secret_key=SigningKey.generate(),
        relay_url=credentials.relay_url,
        name=credentials.name,
        ca_file=credentials.ca_file,
    )


async def register_device(
    credentials: Credentials,
    device: Credentials,
    connector: Connector | None = None,
    *,
    ack_timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Add ``device`` (from :func:`new_device`) to the key chain of ``credentials``'
    identity, signed by the device of ``credentials``."""
    if device.identity != credentials.identity:
        raise CredentialsError(f"{device.device} is a device of {device.identity}")
    connection = Connection(
        credentials,
        connector or credentials_connector(credentials),
        # Deliveries to the signing device are left unconfirmed: its own client gets them.
        on_deliver=lambda deliver: None,
        resume_after=lambda: 0,
        ack_timeout=ack_timeout,
    )
    await connection.open()
    try:
        await add_device_key(connection, credentials, device.device, device.secret_key.public_key)
    finally:
        await connection.close()


async def add_device(
    credentials: Credentials,
    connector: Connector | None = None,
    *,
    ack_timeout: float = DEFAULT_TIMEOUT,
) -> Credentials:
    """Add a new device to ``credentials``' identity; returns the new device's credentials
    (:func:`new_device` then :func:`register_device`; to save the key before adding it,
    call those two)."""
    device = new_device(credentials)
    await register_device(credentials, device, connector, ack_timeout=ack_timeout)
    return device


async def add_device_key(
    connection: Connection, credentials: Credentials, device: DeviceId, public_key: VerifyKey
) -> None:
    chain = await fetch_chain(connection, credentials.identity)
    await _append(
        connection, credentials, chain, op=KeyOp.ADD, device=device, public_key=public_key
    )
    log.info("added device %s to %s", device, credentials.identity)


async def revoke_device_key(connection: Connection, credentials: Credentials, device: str) -> None:
    chain = await fetch_chain(connection, credentials.identity)
    public_key = chain.active.get(device)
    if public_key is None:
        raise KeyChainError(f"{device!r} is not an active device of {credentials.identity}")
    await _append(
        connection, credentials, chain, op=KeyOp.REVOKE, device=device, public_key=public_key
    )
    log.info("revoked device %s of %s", device, credentials.identity)


async def _append(
    connection: Connection,
    credentials: Credentials,
    chain: KeyChain,
    *,
    op: KeyOp,
    device: str,
    public_key: VerifyKey,
) -> None:
    entry = make_entry(
        identity=credentials.identity,
        seq=chain.version,
        prev=chain.head,
        op=op,
        device=device,
        public_key=public_key,
        signer=credentials.device,
        signer_key=credentials.secret_key,
    )
    chain.check(entry)
    await connection.request(lambda ref: AppendKey(ref=ref, entry=entry), Done)
