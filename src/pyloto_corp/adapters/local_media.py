"""Local media: a folder standing in for Graph's media, for development without a token.

Media id `X` is the file `folder/X`, beside `folder/X.json` holding `{"mime_type", "sha256"}`
(hex). `store_local_media` writes both, as `pyloto simulate --voice FILE` does, and the
checks are Graph's: the size before reading, the sha256 after.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from pathlib import Path

from pyloto_corp.adapters.graph_media import CHECKSUM_MISMATCH, TOO_LARGE, UNAVAILABLE
from pyloto_corp.application.ports import MediaFile, MediaRejected

# What a media id may be here: a file name, never a path out of the folder.
_MEDIA_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class LocalMedia:
    """`MediaSource` on a folder of files written by `store_local_media`."""

    def __init__(self, folder: Path) -> None:
        # Resolved once: the folder stays the same whatever the working directory becomes.
        self.folder = folder.resolve()

    async def fetch(self, media_id: str, max_bytes: int, phone_number_id: str = "") -> MediaFile:
        """The file's bytes, checked against `max_bytes` and its recorded sha256 (one folder
        for every business number)."""
        return await asyncio.to_thread(self._read, media_id, max_bytes)

    def _read(self, media_id: str, max_bytes: int) -> MediaFile:
        if not _MEDIA_ID.match(media_id):
            raise MediaRejected(UNAVAILABLE, "not a local media id")
        path = self.folder / media_id
        try:
            meta = json.loads(path.with_name(f"{media_id}.json").read_text("utf-8"))
            size = path.stat().st_size
            if size > max_bytes:
                raise MediaRejected(TOO_LARGE, f"{size} bytes")
            with path.open("rb") as file:
                data = file.read(max_bytes + 1)  # the file may have grown since stat()
        except (OSError, ValueError):
            raise MediaRejected(UNAVAILABLE, "no such local media") from None
        if len(data) > max_bytes:
            raise MediaRejected(TOO_LARGE, f"more than {max_bytes} bytes")
        if not isinstance(meta, dict):
            raise MediaRejected(UNAVAILABLE, "local media without its description")
        digest = hashlib.sha256(data).hexdigest()
        if str(meta.get("sha256", "")).lower() != digest:
            raise MediaRejected(CHECKSUM_MISMATCH, "file differs from its recorded sha256")
        return MediaFile(data, str(meta.get("mime_type") or "application/octet-stream"), digest)


def store_local_media(folder: Path, data: bytes, mime_type: str) -> str:
    """Write `data` as a new media in `folder` (created if needed); its fresh media id."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        # Shaped like Meta's media ids (16 digits), so a simulated webhook looks like a real one.
        media_id = str(10**15 + secrets.randbelow(9 * 10**15))
        path = folder / media_id
        try:
            with path.open("xb") as file:  # never over another media
                file.write(data)
        except FileExistsError:
            continue
        break
    meta = {"mime_type": mime_type, "sha256": hashlib.sha256(data).hexdigest()}
    # Written last: a half-stored media reads as missing, not as corrupt.
    path.with_name(f"{media_id}.json").write_text(json.dumps(meta), "utf-8")
    return media_id
