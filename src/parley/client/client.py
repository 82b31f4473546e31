"""The asyncio client: one device of one identity, connected to a relay.

Wiring only; each concern lives in its own module::

    Connection  session, requests, acks, reconnect      (connection.py)
    State       offset, seen jti, cached key chains     (state.py)
    Directory   other identities' device keys           (directory.py)
    Verifier    the receive checks                      (verify.py)
    Inbox       ordered, exactly-once handling          (inbox.py)
    Sender      signing, sealing and sending            (sender.py)
    EndToEnd    sealing and opening bodies              (e2ee.py: olm.py, devices.py)
    Prekeys     keeping this device's keys published    (prekeys.py)
    Voice, Connections, PresenceService, Calls          the services apps use

Subscribe handlers before :meth:`connect`, or right after it without awaiting in
between: messages that arrived while offline are handled as soon as the client runs,
and a message with no handler is confirmed and dropped.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from parley.client.calls import Calls
from parley.client.connection import Connection, Connector, websocket_connector
from parley.client.connections import Connections
from parley.client.devices import Devices
from parley.client.directory import Directory
from parley.client.e2ee import EndToEnd
from parley.client.handlers import Handlers, Observer, Saver
from parley.client.inbox import Inbox
from parley.client.olm import OlmDevice
from parley.client.prekeys import Prekeys
from parley.client.presence import PresenceService
from parley.client.registration import revoke_device_key
from parley.client.sender import Sender
from parley.client.state import MEMORY, State
from parley.client.verify import Verifier
from parley.client.voice import Voice
from parley.credentials import Credentials
from parley.errors import StateError
from parley.ids import DeviceId, IdentityId
from parley.protocol.call_phone import PhoneConfig
from parley.protocol.frames import Deliver, KeyCount
from parley.protocol.messages import Message


class Client:
    """A device's session with the relay.

    ``state_path`` is where the last processed offset, seen message ids, cached key
    chains and the device's Olm account and sessions (encrypted) are kept; ``None`` or
    ``":memory:"`` keeps them in memory only, so a restarted client may handle again a
    message whose confirm was lost, and starts a new Olm account that cannot open what
    was sealed for the previous one while it was away.
    ``connector`` opens a transport to the relay (default: a WebSocket to
    ``credentials.relay_url``; a ``wss://`` relay's certificate verified against
    ``ca_file``, else the credentials' CA file, else the system's trusted CAs).
    Requests fail with :class:`DeliveryTimeout` after ``ack_timeout`` seconds; sent
    messages expire ``message_lifetime`` seconds after they are signed. ``clock``
    returns Unix time in seconds.
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
        self._credentials = credentials
        self._state_path: str | Path = MEMORY if state_path is None else Path(state_path)
        self._clock = clock
        self.rejected: Counter[str] = Counter()
        """Messages refused by the receive checks, by reason (``"bad_signature"``, ...)."""
        self._connection = Connection(
            credentials,
            connector
            or websocket_connector(credentials.relay_url, ca_file=ca_file or credentials.ca_file),
            on_deliver=self._on_deliver,
            resume_after=self._resume_after,
            # Late-bound: the presence service is built on this connection, just below.
            on_presence=lambda frame: self.presence.received(frame),  # noqa: PLW0108
            on_reconnect=lambda: self.presence.reconnected(),  # noqa: PLW0108
            on_key_count=self._on_key_count,
            ack_timeout=ack_timeout,
        )
        self._handlers = Handlers()
        sender = Sender(
            credentials, self._connection, message_lifetime=message_lifetime, clock=clock
        )
        self._sender = sender
        self.connections = Connections(self._connection)
        self.presence = PresenceService(self._connection)
        self._voice = Voice(sender, self._handlers)
        self._calls: Calls | None = None
        self._state: State | None = None
        self._inbox: Inbox | None = None
        self._prekeys: Prekeys | None = None

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
        """A client for the credentials file at ``path``; state beside it by default."""
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
        return self._credentials.identity

    @property
    def device(self) -> DeviceId:
        """This client's device id."""
        return self._credentials.device

    def observe(
        self, observer: Observer, *, before_record: bool = False, until_saved: Saver | None = None
    ) -> Callable[[], None]:
        """See every verified message with its signing device, own-device copies too.

        For layers built on the voice messages (calls, the proxy); apps use ``voice()``.
        Like handlers, an observer runs after the message is recorded as processed: a
        crash may lose it, never repeat it. With ``before_record`` it runs before that
        record: it sees every message at least once, and again after a crash or a
        :meth:`close` while it ran, so it must skip repeats itself (by ``jti`` and
        issuer) — for an observer that saves what it handled in a store of its own.
        Such an observer may return as soon as it has taken a message in and give
        ``until_saved``: no message is recorded before ``until_saved()`` has returned,
        once for all it took in since the last call (one save for a burst of messages).
        Returns a function that stops the observing.
        """
        return self._handlers.observe(
            observer, before_record=before_record, until_saved=until_saved
        )

    def observe_sent(self, observer: Callable[[Message], None]) -> Callable[[], None]:
        """See every message this device sent (through ``voice()``, ``calls()`` or a
        proxy), once the relay acknowledged it: for transcripts and audit logs.
        Returns a function that stops the observing."""
        return self._sender.observe_sent(observer)

    @property
    def sender(self) -> Sender:
        """Signs, seals and sends typed messages: for the layers that build their own
        (the call machines' runner); apps use ``voice()``."""
        return self._sender

    def voice(self) -> Voice:
        """The voice service (the same object on every call)."""
        return self._voice

    def calls(self, config: PhoneConfig | None = None) -> Calls:
        """The call service (the same object on every call), started on the first one.

        ``config`` (ring lifetime, grace, auto-busy) applies from that first call; a
        different one later raises :class:`StateError`. Call it from the client's event
        loop, before :meth:`connect` or right after it, like subscribing a handler, so no
        start that arrived while offline is missed.
        """
        if self._calls is None:
            self._calls = Calls(self, config or PhoneConfig(), clock=self._clock)
            self._calls.start()
        elif config is not None and config != self._calls.config:
            raise StateError("the calls service runs already, with another configuration")
        return self._calls

    async def connect(self) -> None:
        """Open the state file, connect and authenticate, publish this device's keys;
        then handle deliveries."""
        if self._state is not None:
            raise StateError("a client connects once; make a new one to connect again")
        state = State(
            self._state_path, identity=self._credentials.identity, device=self._credentials.device
        )
        try:
            olm = OlmDevice(self._credentials, state)
        except BaseException:
            state.close()
            raise
        directory = Directory(self._connection, state)
        e2ee = EndToEnd(olm, Devices(self._connection, directory, olm, state), directory, state)
        inbox = Inbox(
            identity=self._credentials.identity,
            device=self._credentials.device,
            connection=self._connection,
            state=state,
            e2ee=e2ee,
            verifier=Verifier(self._credentials.identity, directory, state, self._clock),
            handlers=self._handlers,
            rejected=self.rejected,
            clock=self._clock,
        )
        prekeys = Prekeys(self._connection, olm, state)
        self._state, self._inbox, self._prekeys = state, inbox, prekeys
        try:
            await self._connection.open()
        except BaseException:
            self._state = self._inbox = self._prekeys = None
            state.close()
            raise
        try:
            await prekeys.publish()
        except BaseException:
            await self.close()
            raise
        self._sender.attach(e2ee)
        inbox.start()

    async def close(self) -> None:
        """Hang up this device's calls, stop handling and reconnecting, close the
        connection and the state file."""
        if self._calls is not None:
            # Without a connection a stop could not go out; the peers end the calls gone.
            await self._calls.close(hang_up=self._connection.connected)
        if self._inbox is not None:
            await self._inbox.stop()
        if self._prekeys is not None:
            await self._prekeys.close()
        await self.presence.close()
        await self._connection.close()
        if self._state is not None:
            self._state.close()

    async def revoke_device(self, device: str) -> None:
        """Revoke a device of this identity (an entry signed by this device).

        The relay closes the revoked device's connection, and other identities refuse
        its messages from then on, including those it sent before.
        """
        await revoke_device_key(self._connection, self._credentials, device)

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _on_key_count(self, frame: KeyCount) -> None:
        if self._prekeys is not None:
            self._prekeys.received(frame)

    def _on_deliver(self, deliver: Deliver) -> None:
        if self._inbox is not None:
            self._inbox.put(deliver)

    def _resume_after(self) -> int:
        return 0 if self._state is None else self._state.offset
