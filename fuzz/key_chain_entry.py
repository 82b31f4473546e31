"""A key chain entry's body, checked as the next link of a chain: ChainEntry.decoded and
KeyChain.check -> the entry body, or KeyChainError.

The signature is fixed, so past the signature check only the seeds' own bodies get far.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

from fuzz import samples
from fuzz.harness import Target, deep_msgpack, main
from parley.errors import KeyChainError
from parley.protocol.keychain import ChainEntry, EntryBody, KeyChain

_EMPTY = KeyChain("alice")
_ONE = samples.alice_chain()
_GENESIS, _SECOND = samples.genesis(), samples.second_entry()
_SIGNATURES = {_GENESIS.body: _GENESIS.signature, _SECOND.body: _SECOND.signature}


def parse(data: bytes) -> EntryBody:
    entry = ChainEntry(body=data, signature=_SIGNATURES.get(data, b"\x00" * 64))
    try:
        return _EMPTY.check(entry)  # as a genesis entry
    except KeyChainError:
        return _ONE.check(entry)  # as the entry after one


TARGET = Target(
    name="key_chain_entry",
    parse=parse,
    errors=(KeyChainError,),
    seeds=lambda: [_GENESIS.body, _SECOND.body],
    examples=[deep_msgpack(), b"\x98" + b"\x91" * 1000 + b"\x00"],
)

if __name__ == "__main__":
    main(TARGET)
