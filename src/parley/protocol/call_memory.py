"""A bounded memory of calls that are over, so late messages never bring one back.

Only a start creates a call, and a start older than its lifetime never rings
(``call_phone``), so the memory has to cover one ring lifetime's worth of calls: size it
above the number of calls a phone or proxy sees in that time (default 1024).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class CallMemory(Generic[T]):
    """call_id -> what is left of the call, or a tombstone (``None``) for a call_id we
    only heard about (a stop before its start, another device's call)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the call memory must hold at least one call")
        self._size = size
        self._entries: OrderedDict[str, T | None] = OrderedDict()

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._entries

    def get(self, call_id: str) -> T | None:
        return self._entries.get(call_id)

    def remember(self, call_id: str, value: T | None = None) -> None:
        """Keep ``value`` (a tombstone never overwrites what is known), oldest out first."""
        if value is None and call_id in self._entries:
            return
        self._entries[call_id] = value
        self._entries.move_to_end(call_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
