"""The core SDK imports without the media extra; parley.media says which extra it needs."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["aiortc"] = None  # as if the extra were not installed
import parley, parley.client, parley.protocol.session_description, parley.ice
try:
    import parley.media
except parley.errors.MediaUnavailable as exc:
    print("MediaUnavailable:", exc)
"""


def test_without_aiortc_the_sdk_imports_and_media_names_the_extra() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    assert "MediaUnavailable:" in result.stdout
    assert "pip install 'parley[media]'" in result.stdout
