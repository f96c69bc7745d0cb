"""Real media files, made in memory: a voice note as WhatsApp sends it (OGG/Opus, mono) and a
PNG picture. Nothing is downloaded: libsndfile comes inside the `soundfile` wheel (a dev
dependency), the PNG is written by hand."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import soundfile

VOICE = "audio/ogg; codecs=opus"  # the MIME type Graph gives a WhatsApp voice note
# WhatsApp's voice notes are OGG/Opus, mono; 16 kHz keeps a test's file small.
VOICE_SAMPLE_RATE = 16_000


def voice_note_ogg(seconds: float = 1.0, frequency: float = 440.0) -> bytes:
    """An OGG/Opus file of a sine tone, mono, `seconds` long."""
    times = np.arange(round(seconds * VOICE_SAMPLE_RATE)) / VOICE_SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * frequency * times)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, VOICE_SAMPLE_RATE, format="OGG", subtype="OPUS")
    return buffer.getvalue()


def voice_note(size: int | None = None) -> bytes:
    """A real OGG/Opus voice note; with `size`, one long enough to pass that many bytes."""
    data = voice_note_ogg()
    if size is not None and len(data) < size:
        # Opus at a steady tone costs about the same bytes per second: scale the length.
        data = voice_note_ogg(seconds=1.2 * size / len(data) + 1)
    return data


def png(width: int = 16, height: int = 8, rgb: tuple[int, int, int] = (40, 120, 200)) -> bytes:
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
