"""Scheme dispatch through loader.storage.BACKENDS."""

from __future__ import annotations

from pathlib import Path

import pytest

from loader.errors import InvalidArgument, Unavailable
from loader.storage import BACKENDS, open_storage, scheme_of
from loader.storage.local import LocalStorage
from loader.storage.s3 import S3Storage
from loader.storage.webhdfs import WebHdfsStorage


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("/srv/models", ""),
        ("relative/models", ""),
        ("C:\\models", ""),
        ("file:///srv/models", "file"),
        ("S3://bucket/models", "s3"),
        ("hdfs://nn:8020/models", "hdfs"),
        ("webhdfss://nn:9871/models", "webhdfss"),
    ],
)
def test_scheme_of(uri: str, scheme: str) -> None:
    assert scheme_of(uri) == scheme
    assert scheme in BACKENDS


def test_plain_path_and_file_uri_are_local(tmp_path: Path) -> None:
    plain = open_storage(str(tmp_path))
    assert isinstance(plain, LocalStorage)
    assert plain.root == tmp_path
    via_uri = open_storage(tmp_path.as_uri())
    assert isinstance(via_uri, LocalStorage)
    assert via_uri.root == tmp_path


def test_s3_uri_opens_the_s3_backend(s3_env: dict[str, str]) -> None:
    storage = open_storage("s3://rollway-test/models/")
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.uri) == (
        "rollway-test",
        "models/",
        "s3://rollway-test/models",
    )
    assert storage.join("m/1/x") == "s3://rollway-test/models/m/1/x"


@pytest.mark.parametrize(
    ("uri", "endpoint", "root"),
    [
        ("webhdfs://nn:9870/models", "http://nn:9870", "/models"),
        ("webhdfss://nn/models", "https://nn:9871", "/models"),
        ("webhdfs://nn", "http://nn:9870", "/"),
    ],
)
def test_webhdfs_uris_open_without_connecting(uri: str, endpoint: str, root: str) -> None:
    storage = open_storage(uri)
    assert isinstance(storage, WebHdfsStorage)
    assert (storage.endpoint, storage.root) == (endpoint, root)


def test_hdfs_without_a_cluster_is_unavailable_and_says_why() -> None:
    # Opening parses only; the first operation finds libhdfs unloadable (no JVM
    # set up) or nothing listening on port 1: either way the store is
    # unavailable, and the message says so.
    storage = open_storage("hdfs://127.0.0.1:1/models")
    with pytest.raises(Unavailable, match=r"hdfs://127\.0\.0\.1:1/models") as caught:
        storage.stat("m/1/saved_model.pb")
    assert caught.value.retriable


def test_unknown_scheme_names_it_and_hides_credentials() -> None:
    with pytest.raises(InvalidArgument) as caught:
        open_storage("gs://user:secret@bucket/models?token=abc")
    message = caught.value.message
    assert "'gs'" in message and "gs://bucket/models" in message
    assert "secret" not in message and "user" not in message and "abc" not in message
    for scheme in ("s3://", "hdfs://", "webhdfs://"):
        assert scheme in message  # tells what is supported
