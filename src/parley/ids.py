"""Identity, device and address types.

An identity id names a person or an app on the network; a device id names one of its
devices (each with its own Ed25519 key). Both are short printable strings so they can
travel in JWS claims, URLs and log lines unchanged.
"""

from __future__ import annotations

import re
import secrets
from typing import NamedTuple, NewType

IdentityId = NewType("IdentityId", str)
DeviceId = NewType("DeviceId", str)

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no look-alikes (l, o, 0, 1)


def is_valid_id(value: str) -> bool:
    """Identity and device ids: 1-64 chars of ``[A-Za-z0-9._-]``, starting alphanumeric."""
    return bool(_ID_PATTERN.match(value))


def new_identity_id() -> IdentityId:
    """A new random identity id (16 characters)."""
    return IdentityId("".join(secrets.choice(_ALPHABET) for _ in range(16)))


def new_device_id() -> DeviceId:
    """A new random device id (``d-`` and 10 characters)."""
    return DeviceId("d-" + "".join(secrets.choice(_ALPHABET) for _ in range(10)))


class Address(NamedTuple):
    """One device of one identity."""

    identity: IdentityId
    device: DeviceId

    def __str__(self) -> str:
        return f"{self.identity}:{self.device}"
