"""The browser softphone: ``parley phone web`` serves a page on 127.0.0.1 that is the
media endpoint of this identity's calls.

The Python process keeps the identity, its keys and the relay connection; the page gets
the microphone, makes or answers the WebRTC session description (gathered in full, not
trickled), plays what it hears and shows the call, talking to its process over a local
WebSocket guarded by a secret token and Host/Origin checks.

::

    from parley.web import WebPhone

    phone = WebPhone(client)        # before client.connect()
    await client.connect()
    async with phone:
        print(phone.url)            # open it in a browser on this machine

Modules, one concern each: ``server`` (HTTP and WebSocket, :class:`WebPhone`,
:func:`serve`), ``guard`` (who may connect), ``bridge`` (page messages <-> calls),
``messages`` (the typed page protocol), ``assets`` (the static files and their headers),
``static/`` (the page: plain HTML, CSS and JavaScript, no build step).
"""

from parley.web.server import WebPhone, WebPhoneError, serve

__all__ = ["WebPhone", "WebPhoneError", "serve"]
