"""The call records as a table, for ``parley calls`` and the demo."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from rich import box
from rich.table import Table

from parley.proxy.records import LegRecord


def records_rows(
    records: Iterable[LegRecord], *, names: Mapping[str, str] | None = None
) -> list[list[str]]:
    """The rows of :func:`records_table` as plain strings: cid, call_id, leg, party,
    started, connected, reason (``parley calls`` prints them tab-separated when piped)."""
    names = names or {}
    return [
        [
            r.cid,
            r.call_id,
            r.leg.value,
            names.get(r.party, r.party),
            time.strftime("%H:%M:%S", time.localtime(r.started)),
            "-" if r.answered is None else f"{r.duration:.3f} s",
            r.reason.value,
        ]
        for r in records
    ]


def records_table(
    records: Iterable[LegRecord],
    *,
    names: Mapping[str, str] | None = None,
    title: str = "call records",
) -> Table:
    """One row per leg, in the order they ended: both legs of a call sit together.

    ``party`` is the identity at the far end of the leg (``names`` may give it a name);
    the proxy is the other end of every leg. ``connected`` is the duration, ``-`` for a
    leg that was never answered. Narrow enough for 80 columns with names.
    """
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for column in ("cid", "call_id", "leg", "party", "started"):
        table.add_column(column, overflow="fold")
    table.add_column("connected", justify="right")
    table.add_column("reason")
    for row in records_rows(records, names=names):
        table.add_row(*row)
    return table


def record_json(record: LegRecord) -> dict[str, Any]:
    """One leg as plain JSON values (every field, times in Unix seconds, and ``party``)."""
    document: dict[str, Any] = msgspec.to_builtins(record)
    document["party"] = record.party
    return document
