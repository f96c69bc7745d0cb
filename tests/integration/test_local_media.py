"""The local media folder of development runs: stored by `store_local_media`, fetched with
Graph's checks (size, then sha256)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pyloto_corp.adapters.local_media import LocalMedia, store_local_media
from pyloto_corp.application.ports import MediaRejected
from tests.support.media_files import VOICE, png, voice_note

pytestmark = pytest.mark.anyio


async def test_stored_media_is_fetched_back(tmp_path: Path) -> None:
    """What store_local_media wrote comes back with its MIME type and sha256, under a fresh
    id each time, in a folder it created."""
    folder = tmp_path / "media"
    data = voice_note()
    media_id = store_local_media(folder, data, VOICE)
    other = store_local_media(folder, png(), "image/png")
    assert media_id != other
    assert media_id.isdigit()
    media = await LocalMedia(folder).fetch(media_id, len(data))
    assert media.data == data
    assert media.mime_type == VOICE
    assert media.sha256 == hashlib.sha256(data).hexdigest()
    assert json.loads((folder / f"{media_id}.json").read_text()) == {
        "mime_type": VOICE,
        "sha256": media.sha256,
    }


async def test_a_file_over_the_limit_is_too_large(tmp_path: Path) -> None:
    """A file one byte over max_bytes: media_too_large."""
    data = png()
    media_id = store_local_media(tmp_path, data, "image/png")
    with pytest.raises(MediaRejected) as caught:
        await LocalMedia(tmp_path).fetch(media_id, len(data) - 1)
    assert caught.value.reason == "media_too_large"


@pytest.mark.parametrize("missing", ["data", "description", "both"])
async def test_missing_media_is_unavailable(tmp_path: Path, missing: str) -> None:
    """No file, no description, or neither: media_unavailable."""
    media_id = store_local_media(tmp_path, png(), "image/png")
    if missing in ("data", "both"):
        (tmp_path / media_id).unlink()
    if missing in ("description", "both"):
        (tmp_path / f"{media_id}.json").unlink()
    with pytest.raises(MediaRejected) as caught:
        await LocalMedia(tmp_path).fetch(media_id, 10**6)
    assert caught.value.reason == "media_unavailable"


@pytest.mark.parametrize("media_id", ["../secret", "a/b", "", ".", "x" * 200])
async def test_an_id_that_is_not_a_file_name_is_unavailable(tmp_path: Path, media_id: str) -> None:
    """A media id is a file name in the folder, never a path out of it."""
    (tmp_path / "secret").write_bytes(b"not media")
    with pytest.raises(MediaRejected) as caught:
        await LocalMedia(tmp_path / "media").fetch(media_id, 10**6)
    assert caught.value.reason == "media_unavailable"


async def test_a_corrupted_file_is_a_checksum_mismatch(tmp_path: Path) -> None:
    """A file changed after it was stored no longer matches its sha256."""
    data = png()
    media_id = store_local_media(tmp_path, data, "image/png")
    (tmp_path / media_id).write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(MediaRejected) as caught:
        await LocalMedia(tmp_path).fetch(media_id, 10**6)
    assert caught.value.reason == "media_checksum_mismatch"
