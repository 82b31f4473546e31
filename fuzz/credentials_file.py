"""A device's credentials file: :meth:`Credentials.load` -> credentials, or
CredentialsError.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

import tempfile

from fuzz import samples
from fuzz.harness import Target, deep_json, in_unknown_field_json, main
from parley.credentials import Credentials
from parley.errors import CredentialsError

_PATH = Path(tempfile.mkdtemp(prefix="parley-fuzz-")) / "alice.json"


def parse(data: bytes) -> Credentials:
    _PATH.write_bytes(data)
    return Credentials.load(_PATH)


TARGET = Target(
    name="credentials_file",
    parse=parse,
    errors=(CredentialsError,),
    seeds=lambda: [samples.credentials_file()],
    examples=[
        deep_json(),
        in_unknown_field_json(b'"identity":"alice"'),
        b'{"identity":"alice","device":"d1","relay_url":"x","secret_key":"\\u00e9"}',
    ],
)

if __name__ == "__main__":
    main(TARGET)
