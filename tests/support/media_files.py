"""Real media files, made in memory: a voice note as WhatsApp sends it (OGG/Opus, mono) and a
PNG picture. Nothing is downloaded: libsndfile comes inside the `soundfile` wheel (a dev
dependency), the PNG is written by hand."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import soundfile

# WhatsApp's voice notes are OGG/Opus, mono; 16 kHz keeps a test's file small.
VOICE_SAMPLE_RATE = 16_000


def voice_note_ogg(seconds: float = 1.0, frequency: float = 440.0) -> bytes:
    """An OGG/Opus file of a sine tone, mono, `seconds` long."""
    times = np.arange(round(seconds * VOICE_SAMPLE_RATE)) / VOICE_SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * frequency * times)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, VOICE_SAMPLE_RATE, format="OGG", subtype="OPUS")
    return buffer.getvalue()


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of `width` x `height` pixels of one colour (8-bit RGB, no interlace)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
