"""Real audio for Parley calls: a softphone on aiortc (the optional ``parley[media]``).

:class:`Softphone` places and answers calls of :meth:`parley.Client.calls` with a WebRTC
session description in ``peer_info`` (:mod:`parley.protocol.session_description`), plays
a source (``tone:HZ``, ``silence``, ``mic``, a sound file), records what it hears (a WAV
file, ``speaker``, or nothing) and ends media and call together. The core SDK imports
without this package's dependencies; importing it without them raises
:class:`~parley.errors.MediaUnavailable` naming the extra to install.
"""

from __future__ import annotations

from parley.errors import MediaUnavailable

try:
    import aiortc  # noqa: F401
    import av  # noqa: F401
    import numpy  # noqa: F401
except ImportError as exc:  # pragma: no cover - the test environment has the extra
    raise MediaUnavailable(
        f"parley.media needs the media extra ({exc.name} is missing): pip install 'parley[media]'"
    ) from exc

from parley.media.softphone import MediaCall, MediaStats, Softphone
from parley.media.sources import open_source

__all__ = ["MediaCall", "MediaStats", "Softphone", "open_source"]
