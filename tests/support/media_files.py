"""Media a customer might send, made in the test: a real PNG and a voice note's bytes."""

from __future__ import annotations

import os
import struct
import zlib

VOICE = "audio/ogg; codecs=opus"  # the MIME type Graph gives a WhatsApp voice note


def png(width: int = 16, height: int = 8) -> bytes:
    """A real RGB PNG: signature, IHDR, one zlib IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 15, y * 30, 200)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def voice_note(size: int = 12_000) -> bytes:
    """Bytes standing in for an Ogg/Opus voice note (random after the Ogg capture pattern)."""
    return b"OggS\x00\x02" + os.urandom(size - 6)
