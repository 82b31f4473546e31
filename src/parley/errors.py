"""Every error Parley raises derives from :class:`ParleyError`.

The tree::

    ParleyError
    ├── ProtocolError                 bytes that do not parse as what they claim to be
    │   ├── MalformedFrame            a client <-> relay frame that does not decode
    │   ├── MalformedMessage          a payload (JWS) that does not decode
    │   ├── UnknownMessageType        a payload whose ``typ`` is not one we know
    │   ├── InvalidSessionDescription a ``peer_info`` that is not a usable offer or answer
    │   └── MalformedPageMessage      what the browser softphone's page sent (``web.messages``)
    ├── VerificationError             a payload that decodes but must not be trusted
    │   ├── BadSignature
    │   ├── UnknownKey                ``kid`` is not a device key of the issuer
    │   │   └── RevokedKey            ... it was, but it has been revoked
    │   ├── WrongIssuer               ``iss`` is not the authenticated sender
    │   ├── WrongAudience             ``aud`` is not the receiving identity
    │   ├── Expired                   ``exp`` has passed
    │   ├── IssuedInFuture            ``iat`` is further ahead than the allowed skew
    │   ├── Replayed                  ``jti`` was seen before
    │   └── DecryptionError           the sealed body cannot be opened (``undecryptable``)
    │       ├── NoKeyForDevice        ... it carries no key for this device
    │       └── Tampered              ... it was altered or moved to another envelope
    ├── KeyChainError                 a key chain entry that does not extend the chain
    │   └── ChainConflict             ... any more: another relay node appended first
    ├── CredentialsError              a credentials file that is missing or invalid
    ├── RelayError                    the relay refused a request (``code`` says why)
    │   ├── AuthenticationFailed
    │   ├── NotAuthenticated
    │   ├── IdentityExists
    │   ├── UnknownIdentity           unknown recipient or unknown identity
    │   ├── NotPermitted              the recipient has not permitted the sender
    │   ├── RateLimited
    │   ├── TooLarge
    │   ├── DeviceRevoked
    │   ├── StaleDevices              a Send does not cover the current devices
    │   ├── InvalidRequest            malformed, unsupported or conflicting request
    │   └── InternalRelayError
    ├── RelayConnectionError              the connection to the relay is not usable
    │   ├── NotConnected
    │   ├── TransportClosed
    │   └── CertificateVerifyFailed   a wss:// relay whose certificate does not verify
    ├── DeliveryTimeout               the relay did not acknowledge in time
    ├── StoreError                    the relay's store of record cannot serve
    │   ├── StoreUnavailable          its database cannot be reached or refused the login
    │   └── SchemaMismatch            its schema is missing or at a version this relay does not run
    ├── StateError                    an operation that the current state does not allow
    │   ├── IllegalTransition         a call event its state has no transition for (nothing changes)
    │   ├── UnknownCall               a command for a call_id the phone or proxy does not hold
    │   └── CallIdInUse               a call placed with a call_id this phone has already seen
    ├── StateFileError                a client's ``<stem>.state.db`` that is not a usable database
    ├── ChildProcessFailed            a relay or proxy process Parley started did not run
    ├── ConfigurationError            a setting that names nothing usable
    │   ├── InvalidIceConfig          an ICE address or server that does not parse
    │   ├── InvalidRelayUrl           a relay URL (list) that names no relay
    │   ├── InvalidStoreLocation      a relay ``--store`` that names no usable backend
    │   ├── InvalidBusLocation        a relay ``--bus`` that names no usable bus
    │   ├── InvalidTlsConfig          a TLS certificate, key or CA file that cannot be used
    │   ├── InvalidMetricsAddress     a relay ``--metrics`` that is not HOST:PORT
    │   └── InvalidProxyStoreLocation a proxy ``--store`` that names no backend
    ├── BusError                      the bus between relay nodes cannot start (Redis away)
    └── MediaError                    the media of a call (``parley.media``)
        ├── MediaUnavailable          the ``parley[media]`` extra or a device is missing
        └── WebPhoneError             the browser softphone cannot serve (``web.server``)

The two classes marked with a module live there, beside what raises them.

``RelayError.from_code`` maps the wire error codes of ``protocol.frames.ErrorCode`` onto
the classes above, so a refusal by the relay surfaces as the same type on every client.
"""

from __future__ import annotations

from typing import ClassVar


class ParleyError(Exception):
    """Root of every error raised by Parley."""


class ProtocolError(ParleyError):
    """Bytes that do not parse as the structure they claim to be."""


class MalformedFrame(ProtocolError):
    """A client <-> relay frame that does not decode."""


class MalformedMessage(ProtocolError):
    """A signed payload that does not decode."""


class UnknownMessageType(ProtocolError):
    """A signed payload whose ``typ`` Parley does not know."""


class InvalidSessionDescription(ProtocolError):
    """A ``peer_info`` that is not the JSON session description of DESIGN.md §2 (wrong
    JSON, ``v`` or ``type``, no ``sdp``, no audio, no DTLS fingerprint, too large)."""


class VerificationError(ParleyError):
    """A payload that decodes but fails one of the checks of DESIGN.md §2."""

    reason: ClassVar[str] = "verification"


class BadSignature(VerificationError):
    """The JWS signature does not verify against the issuer's key for its ``kid``."""

    reason = "bad_signature"


class UnknownKey(VerificationError):
    """The issuer's key chain has no key with the JWS header's ``kid``."""

    reason = "unknown_key"


class RevokedKey(UnknownKey):
    """The ``kid`` names a device key the issuer has revoked."""

    reason = "revoked_key"


class WrongIssuer(VerificationError):
    """``iss`` is not the sender the relay authenticated."""

    reason = "wrong_issuer"


class WrongAudience(VerificationError):
    """``aud`` is not this identity."""

    reason = "wrong_audience"


class Expired(VerificationError):
    """``exp`` has passed."""

    reason = "expired"


class IssuedInFuture(VerificationError):
    """``iat`` is more than a few seconds in the future."""

    reason = "issued_in_future"


class Replayed(VerificationError):
    """A message with this ``jti`` was seen from this issuer before."""

    reason = "replayed"


class DecryptionError(VerificationError):
    """A sealed body this device cannot open: no session, or the Olm message fails."""

    reason = "undecryptable"


class NoKeyForDevice(DecryptionError):
    """The sender did not encrypt the message key for this device."""

    reason = "no_key_for_device"


class Tampered(DecryptionError):
    """The ciphertext fails authentication: altered, truncated or re-addressed."""

    reason = "tampered"


class KeyChainError(ParleyError):
    """A key chain entry that does not validly extend an identity's chain."""


class ChainConflict(KeyChainError):
    """The store already holds an entry at this position of the chain: another relay
    node appended one after this node read the chain. Read the chain again."""


class CredentialsError(ParleyError):
    """A credentials file that is missing, unreadable or invalid."""


class RelayError(ParleyError):
    """The relay refused a request; ``code`` is the wire error code, ``retry_after`` the
    seconds the relay said to wait before asking again (None: it did not say)."""

    code: str = "internal"
    _by_code: ClassVar[dict[str, type[RelayError]]] = {}

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for code in cls.__dict__.get("codes", ()):
            RelayError._by_code[code] = cls

    @staticmethod
    def from_code(code: str, message: str, retry_after: float | None = None) -> RelayError:
        """The exception for the relay's error ``code`` (its own subclass, or RelayError)."""
        cls = RelayError._by_code.get(code, RelayError)
        return cls(message, code=code, retry_after=retry_after)


class AuthenticationFailed(RelayError):
    """The relay refused the device's authentication (``auth_failed``)."""

    codes = ("auth_failed",)


class NotAuthenticated(RelayError):
    """A request before the connection authenticated (``not_authenticated``)."""

    codes = ("not_authenticated",)


class IdentityExists(RelayError):
    """Registration of an identity id that is taken (``identity_exists``)."""

    codes = ("identity_exists",)


class UnknownIdentity(RelayError):
    """The relay knows no such identity (``unknown_identity``, ``unknown_recipient``)."""

    codes = ("unknown_recipient", "unknown_identity")


class NotPermitted(RelayError):
    """The recipient has not permitted the sender (``not_permitted``): it must ``permit`` the sender
    first."""

    codes = ("not_permitted",)


class RegistrationRefused(RelayError):
    """The relay registers no new identities (``registration_closed``), or only with
    a valid, unused invitation token (``invalid_invite``)."""

    codes = ("registration_closed", "invalid_invite")


class RateLimited(RelayError):
    """Too many requests (of this device, identity or network address): wait
    ``retry_after`` seconds, then try again."""

    codes = ("rate_limited",)


class TooLarge(RelayError):
    """A frame over the relay's body limit (``too_large``)."""

    codes = ("too_large",)


class DeviceRevoked(RelayError):
    """This device has been revoked (``device_revoked``)."""

    codes = ("device_revoked",)


class StaleDevices(RelayError):
    """The sender's view of the recipient's (or its own) devices is out of date."""

    codes = ("stale_devices",)


class InvalidRequest(RelayError):
    """The relay found the request malformed, unsupported or in conflict with its state."""

    codes = ("malformed", "unsupported", "invalid_key_chain", "conflict", "expired")


class InternalRelayError(RelayError):
    """The relay failed on its side (``internal``)."""

    codes = ("internal",)


class RelayConnectionError(ParleyError):
    """The connection to the relay is not usable."""


class NotConnected(RelayConnectionError):
    """An operation needs a connection and there is none."""


class TransportClosed(RelayConnectionError):
    """The underlying transport closed."""


class CertificateVerifyFailed(RelayConnectionError):
    """A ``wss://`` relay's certificate does not verify against the trusted CAs (the
    system store, or the CA file given): wrong CA, expired, or another host's name."""


class DeliveryTimeout(ParleyError):
    """The relay did not acknowledge a request within the timeout."""


class StoreError(ParleyError):
    """The relay's store of record (``relay.store``) cannot serve."""


class StoreUnavailable(StoreError):
    """The store's database cannot be reached, or refused the connection (unknown
    database, wrong password, too many connections, shutting down)."""


class SchemaMismatch(StoreError):
    """The store's schema is missing or at a version this relay does not run.

    ``found`` is the version the database is at (0: no schema), ``expected`` the one this
    relay runs; the message says what to do (migrate, or upgrade Parley).
    """

    def __init__(self, message: str, *, found: int, expected: int) -> None:
        super().__init__(message)
        self.found = found
        self.expected = expected


class StateError(ParleyError):
    """An operation that the current state does not allow."""


class IllegalTransition(StateError):
    """A call event that the call's current state has no transition for.

    Raised before anything changes: the call keeps its state (``protocol.call``).
    """


class UnknownCall(StateError):
    """A command for a call_id that the phone or proxy does not hold (or has forgotten)."""


class CallIdInUse(StateError):
    """A call placed with a call_id this phone already holds or remembers."""


class StateFileError(ParleyError):
    """A client's state file (``<stem>.state.db`` beside the credentials) that SQLite
    cannot use: not a database, corrupt, or unreadable. The message names the file."""


class ChildProcessFailed(ParleyError):
    """A child process (relay, proxy) exited early or did not become ready."""


class MediaError(ParleyError):
    """The media of a call could not be set up or went wrong (``parley.media``)."""


class MediaUnavailable(MediaError):
    """Media was asked for where it cannot run: the ``parley[media]`` extra is not
    installed, or the machine has no such device (microphone, speaker)."""


class ConfigurationError(ParleyError):
    """A setting (flag, environment variable, argument) that names nothing usable."""


class InvalidIceConfig(ConfigurationError):
    """An ICE setting that cannot be used (an address or server URL that does not parse)."""


class InvalidRelayUrl(ConfigurationError):
    """A relay URL setting that names no relay."""


class InvalidStoreLocation(ConfigurationError):
    """A relay ``--store`` that names no backend Parley has, or a backend not installed."""


class InvalidBusLocation(ConfigurationError):
    """A relay ``--bus`` that names no bus Parley has, or one whose extra is not installed."""


class InvalidTlsConfig(ConfigurationError):
    """A TLS setting that cannot be used: a certificate, key or CA file that cannot be
    read or is not what it should be (the message names the file), or half a pair."""


class EventLoopUnavailable(ConfigurationError):
    """The event loop asked for (``--loop uvloop``) is not installed."""


class InvalidMetricsAddress(ConfigurationError):
    """A relay ``--metrics`` listener address that is not ``HOST:PORT``."""


class InvalidProxyStoreLocation(ConfigurationError):
    """A proxy ``--store`` that names no backend Parley has, or one not installed."""


class BusError(ParleyError):
    """The bus between relay nodes cannot start: its server cannot be reached, or is not
    what it should be."""
