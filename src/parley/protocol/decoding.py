"""Decoding untrusted bytes with msgspec: a value, or the caller's typed error.

Every parser of bytes from outside the process (frames, JWS headers and claims, sealed
bodies, key chain entries, credentials and state files, the phone page's messages)
decodes through a
:class:`Decoder`, which bounds the input and maps every way msgspec can fail onto one
:class:`~parley.errors.ParleyError` subclass chosen by the parser:

- size: input longer than ``max_bytes`` (characters, for text) is refused before msgspec
  sees it, so what it decodes is bounded too (at worst some 60 bytes of objects per
  input byte: a one-byte empty msgpack array is a Python list);
- shape: :class:`msgspec.DecodeError` and its :class:`msgspec.ValidationError`;
- depth: msgspec's C decoders count every nesting level against the interpreter's
  recursion limit (``Py_EnterRecursiveCall``) and raise :class:`RecursionError` beyond
  it, even inside a typed decode while skipping an unknown field. That guard never
  overflows the C stack, so it *is* the depth bound: we map its ``RecursionError``
  rather than walk every input once more in Python to count levels first, which would
  cost more than the decode itself on every frame;
- input of the wrong kind (text with lone surrogates for JSON, not bytes at all):
  :class:`UnicodeError`, :class:`TypeError`.

A parser with further checks of its own raises the same error class for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

import msgspec

from parley.errors import ParleyError

T = TypeVar("T")

KIB = 1024
MIB = 1024 * KIB


class Decoder(Generic[T]):
    """Decode ``type`` from JSON or msgpack; every failure is ``error("<what>: <why>")``."""

    __slots__ = ("_decode", "_error", "_what", "max_bytes")

    def __init__(
        self,
        type: Any,
        *,
        format: Literal["json", "msgpack"],
        error: type[ParleyError],
        what: str,
        max_bytes: int,
    ) -> None:
        decoder = msgspec.json.Decoder(type) if format == "json" else msgspec.msgpack.Decoder(type)
        # Any: the JSON decoder takes text as well as bytes; msgpack raises TypeError for it.
        self._decode: Callable[[Any], T] = decoder.decode
        self._error = error
        self._what = what
        self.max_bytes = max_bytes

    def decode(self, data: bytes | str) -> T:
        """The value in ``data``, or the error."""
        if not isinstance(data, bytes | bytearray | memoryview | str):
            raise self._error(f"{self._what}: a {type(data).__name__}, not bytes")
        if len(data) > self.max_bytes:
            raise self._error(f"{self._what}: {len(data)} long, over the {self.max_bytes} allowed")
        try:
            return self._decode(data)
        except msgspec.DecodeError as exc:  # ValidationError is one too
            raise self._error(f"{self._what}: {exc}") from None
        except RecursionError:
            raise self._error(f"{self._what}: nested too deeply") from None
        except (UnicodeError, TypeError) as exc:
            raise self._error(f"{self._what}: {exc}") from None
