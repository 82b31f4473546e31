"""Two people talk: a softphone that calls, or one that answers, and says what it heard.

    python examples/softphone_call.py answer bob.json --play tone:1000
    python examples/softphone_call.py call alice.json BOB_ID --play tone:440 --seconds 3

Each side plays its source for the length of the call and records what it hears; when
the call ends it prints the loudest frequency it heard, so two tones show at once that
audio flowed both ways. Set PARLEY_ICE_HOSTS=127.0.0.1 to keep the media on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from parley import Client
from parley.media import MediaCall, Softphone
from parley.media.analysis import dominant_frequency, read_wav


def report(media: MediaCall, recording: Path) -> None:
    samples, rate = read_wav(recording)
    heard = dominant_frequency(samples[rate // 2 :], rate)  # past the first half second
    print(f"[softphone] heard {heard:.1f} Hz for {len(samples) / rate:.1f} s", flush=True)


# --8<-- [start:softphone]
async def call(credentials: Path, peer: str, play: str, seconds: float, tmp: Path) -> None:
    async with Client.from_credentials(credentials) as client:
        phone = Softphone(client, source=play)
        media = await phone.call(peer, record=tmp / "heard.wav")
        await media.wait_audio(timeout=15)
        print("[softphone] connected", flush=True)
        await asyncio.sleep(seconds)
        await media.hangup()
        print(f"[softphone] ended: {(await media.wait_ended()).reason}", flush=True)
        report(media, tmp / "heard.wav")


async def answer(credentials: Path, play: str, tmp: Path) -> None:
    async with Client.from_credentials(credentials) as client:
        phone = Softphone(client, source=play)
        print(f"[softphone] ready as {client.id}", flush=True)
        async for incoming in phone.incoming():
            media = await phone.answer(incoming, record=tmp / "heard.wav")
            print(f"[softphone] answered {incoming.peer}", flush=True)
            print(f"[softphone] ended: {(await media.wait_ended()).reason}", flush=True)
            report(media, tmp / "heard.wav")
            return


# --8<-- [end:softphone]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    calling = commands.add_parser("call")
    calling.add_argument("credentials", type=Path)
    calling.add_argument("peer")
    calling.add_argument("--seconds", type=float, default=3.0)
    answering = commands.add_parser("answer")
    answering.add_argument("credentials", type=Path)
    for sub in (calling, answering):
        sub.add_argument("--play", default="tone:440")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.command == "call":
            asyncio.run(call(args.credentials, args.peer, args.play, args.seconds, Path(tmp)))
        else:
            asyncio.run(answer(args.credentials, args.play, Path(tmp)))


if __name__ == "__main__":
    main()
