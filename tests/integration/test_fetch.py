"""loader/fetch.py on a real store (local disk and SeaweedFS S3): staged versions
land in the cache verified; good cached files are reused, bad ones fetched again."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from loader.errors import DataLoss
from loader.fetch import fetch_version
from loader.manifest import MANIFEST_NAME
from loader.publish import publish_version
from loader.storage import open_storage
from tests.conftest import HALF_PLUS_TWO
from tests.stores import Backend

SHARD = "variables/variables.data-00000-of-00001"


@pytest.fixture
def store(backend: Backend, tmp_path: Path) -> Backend:
    source = tmp_path / "src" / "1"
    shutil.copytree(HALF_PLUS_TWO / "00000123", source)
    publish_version(source, open_storage(backend.version_uri("hp2")), "hp2", 1, workers=2)
    return backend


def test_fetch_then_reuse(store: Backend, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = fetch_version(store.storage, "hp2", 1, cache, workers=2)
    assert first.files_fetched == 4 and first.files_reused == 0
    assert (cache / "hp2" / "1" / MANIFEST_NAME).is_file()
    assert (cache / "hp2" / "1" / "saved_model.pb").read_bytes() == (
        HALF_PLUS_TWO / "00000123" / "saved_model.pb"
    ).read_bytes()
    again = fetch_version(store.storage, "hp2", 1, cache, workers=2)
    assert again.files_fetched == 0 and again.files_reused == 4
    assert again.bytes_fetched == 0


def test_a_corrupt_or_stray_cache_file_is_repaired(store: Backend, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fetch_version(store.storage, "hp2", 1, cache)
    shard = cache / "hp2" / "1" / SHARD
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))
    (cache / "hp2" / "1" / "stray.txt").write_text("not in the manifest")
    result = fetch_version(store.storage, "hp2", 1, cache)
    assert result.files_fetched == 1
    assert shard.read_bytes() == (HALF_PLUS_TWO / "00000123" / SHARD).read_bytes()
    assert not (cache / "hp2" / "1" / "stray.txt").exists()


def test_the_assigned_digest_must_match(store: Backend, tmp_path: Path) -> None:
    manifest = store.storage.read_bytes(f"hp2/1/{MANIFEST_NAME}")
    digest = hashlib.sha256(manifest).hexdigest()
    result = fetch_version(
        store.storage, "hp2", 1, tmp_path / "ok", expected_manifest_sha256=digest
    )
    assert result.manifest_sha256 == digest
    with pytest.raises(DataLoss, match="does not hold the assigned version"):
        fetch_version(store.storage, "hp2", 1, tmp_path / "c", expected_manifest_sha256="0" * 64)


def test_a_damaged_store_object_is_never_cached(store: Backend, tmp_path: Path) -> None:
    store.storage.write_bytes(f"hp2/1/{SHARD}", b"damaged in the store")
    cache = tmp_path / "cache"
    with pytest.raises(DataLoss, match="its manifest says"):
        fetch_version(store.storage, "hp2", 1, cache)
    assert not (cache / "hp2" / "1" / MANIFEST_NAME).exists()
    assert not (cache / "hp2" / "1" / SHARD).exists()
