"""The Voice messages: send a start, handle the accept, send a stop.

Run it as ``python examples/voice_messages.py operator.json APP_ID``.
"""

import asyncio
import sys

from parley import Client, VoiceAccept


async def main(credentials: str, app_id: str) -> None:
    client = Client.from_credentials(credentials)
    async with client:  # connect + authenticate
        await client.connections.permit(app_id)  # accept messages from the app
        voice = client.voice()
        answered = asyncio.Event()

        @voice.on_accept  # or voice.on_accept(handler); plain functions work too
        async def on_accept(issuer: str, payload: VoiceAccept) -> None:
            print(issuer, payload.cid, payload["call_id"], payload.peer_info)
            answered.set()

        await voice.start(app_id, "cid-1", "call-1", "offer-sdp", {"operator_name": "Bob"})
        await asyncio.wait_for(answered.wait(), timeout=30)
        await voice.stop(app_id, "cid-1", "call-1")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
