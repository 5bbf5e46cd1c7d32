"""loader/manifest.py: the JSON form, strict validation, SavedModel summaries, hashing."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format

from loader import manifest
from loader.errors import DataLoss, InvalidArgument, NotFound
from loader.schemas.rollway.v1 import manifest_pb2
from loader.storage import CHUNK_BYTES

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tf_serving"
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu" / "00000123"
SHA_A, SHA_B = "a" * 64, "0123456789abcdef" * 4


def sample() -> manifest_pb2.VersionManifest:
    m = manifest_pb2.VersionManifest(
        schema_version=manifest.SCHEMA_VERSION,
        model="half",
        version=123,
        files=[
            manifest_pb2.FileEntry(path="saved_model.pb", size=10, sha256=SHA_A),
            manifest_pb2.FileEntry(path="variables/variables.index", size=0, sha256=SHA_B),
        ],
        total_bytes=10,
        created_by="tests",
    )
    m.created_at.FromDatetime(datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    sig = m.saved_model.meta_graphs.add(tags=["serve"]).signatures.add(name="serving_default")
    sig.inputs.add(name="x", dtype="DT_FLOAT", shape=[-1, 1])
    return m


def sample_json() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(manifest.encode(sample()))
    return document


def test_round_trip_is_exact_and_deterministic() -> None:
    data = manifest.encode(sample())
    assert manifest.decode(data) == sample()
    assert manifest.encode(manifest.decode(data)) == data
    assert data.endswith(b"}\n")
    assert list(json.loads(data))[:4] == ["schemaVersion", "model", "version", "files"]


def test_version_zero_and_defaults_are_printed() -> None:
    m = sample()
    m.version = 0
    document = json.loads(manifest.encode(m))
    assert document["version"] == "0"
    assert manifest.decode(manifest.encode(m)).version == 0


def test_proto_field_names_are_accepted_too() -> None:
    document = sample_json()
    document["schema_version"] = document.pop("schemaVersion")
    document["total_bytes"] = document.pop("totalBytes")
    assert manifest.decode(json.dumps(document).encode()) == sample()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _dup_first_file(document: dict[str, Any]) -> None:
    document["files"].append(copy.deepcopy(document["files"][0]))
    document["totalBytes"] = "20"


# (case, mutation of a valid document, a fragment of the expected problem)
INVALID = [
    ("dotdot", _set("files.0.path", "../escape"), "'..' segment"),
    ("dotdot inside", _set("files.0.path", "variables/../../x"), "'..' segment"),
    ("absolute", _set("files.0.path", "/etc/passwd"), "absolute path"),
    ("backslash", _set("files.0.path", "variables\\variables.index"), "backslash"),
    ("empty segment", _set("files.0.path", "variables//x"), "empty, '.' or '..'"),
    ("dot segment", _set("files.0.path", "./saved_model.pb"), "empty, '.' or '..'"),
    ("trailing slash", _set("files.0.path", "variables/"), "empty, '.' or '..'"),
    ("empty path", _set("files.0.path", ""), "empty path"),
    ("lists itself", _set("files.0.path", manifest.MANIFEST_NAME), "lists itself"),
    ("duplicate path", _dup_first_file, "duplicate path"),
    ("negative size", _set("files.0.size", "-10"), "negative size"),
    ("sha256 uppercase", _set("files.0.sha256", "A" * 64), "64 lowercase hex"),
    ("sha256 short", _set("files.0.sha256", "ab"), "64 lowercase hex"),
    ("total", _set("totalBytes", "11"), "total_bytes is 11, but the files sum to 10"),
    ("empty model", _set("model", ""), "model name is empty"),
    ("negative version", _set("version", "-1"), "version -1 is negative"),
    ("schema version", _set("schemaVersion", 2), "unknown schema_version 2"),
    ("unknown field", _set("extra", 1), "unknown field 'extra'"),
    ("unknown nested", _set("files.1.mode", "0644"), "unknown field files[1].'mode'"),
    ("unknown deep", _set("savedModel.metaGraphs.0.x", 1), "savedModel.metaGraphs[0].'x'"),
    ("wrong type", _set("files.0.size", "ten"), "does not match its schema"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_documents(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    document = sample_json()
    mutate(document)
    with pytest.raises(manifest.ManifestError) as info:
        manifest.decode(json.dumps(document).encode())
    assert any(expected in problem for problem in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not json {", "manifest is not JSON"),
        (b"\xff\xfe garbage", "manifest is not JSON"),
        (b"", "manifest is not JSON"),
        (b"[1, 2]", "manifest is not a JSON object but list"),
        (b'{"model": "a", "model": "b"}', "manifest is not JSON: duplicate key 'model'"),
        (b" " * (manifest.MAX_MANIFEST_BYTES + 1), "over the 16777216 limit"),
    ],
    ids=["not-json", "not-utf8", "empty", "array", "duplicate-key", "too-large"],
)
def test_undecodable_bytes(data: bytes, expected: str) -> None:
    with pytest.raises(manifest.ManifestError) as info:
        manifest.decode(data)
    assert any(expected in problem for problem in info.value.problems), info.value.problems


def test_every_problem_is_reported_at_once() -> None:
    document = sample_json()
    document["files"][0]["path"] = "../x"
    document["files"][1]["sha256"] = "nope"
    document["version"] = "-3"
    document["bogus"] = True
    document["totalBytes"] = "99"
    with pytest.raises(manifest.ManifestError) as info:
        manifest.decode(json.dumps(document).encode())
    problems = info.value.problems
    assert len(problems) == 5, problems
    assert isinstance(info.value, DataLoss) and not info.value.retriable
    assert all(p in info.value.message for p in problems)


def test_file_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "MAX_FILES", 1)
    assert any("over the 1 limit" in p for p in manifest.validate(sample()))


def test_summary_of_tf_serving_half_plus_two() -> None:
    summary = manifest.summarize_saved_model(HALF_PLUS_TWO)
    (meta,) = summary.meta_graphs
    assert list(meta.tags) == ["serve"]
    signatures = {s.name: s for s in meta.signatures}
    assert [s.name for s in meta.signatures] == sorted(signatures)
    classify = signatures["classify_x_to_y"]
    assert classify.method_name == "tensorflow/serving/classify"
    (inputs,) = classify.inputs
    assert (inputs.name, inputs.dtype, inputs.unknown_rank) == ("inputs", "DT_STRING", True)
    predict = signatures["serving_default"]
    assert predict.method_name == "tensorflow/serving/predict"
    (x,) = predict.inputs
    assert (x.name, x.dtype, list(x.shape), x.unknown_rank) == ("x", "DT_FLOAT", [-1, 1], False)
    assert (
        manifest.summarize_saved_model((HALF_PLUS_TWO / "saved_model.pb").read_bytes()) == summary
    )


def test_summary_reads_pbtxt(tmp_path: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((HALF_PLUS_TWO / "saved_model.pb").read_bytes())
    (tmp_path / "saved_model.pbtxt").write_text(text_format.MessageToString(saved))
    expected = manifest.summarize_saved_model(HALF_PLUS_TWO)
    assert manifest.summarize_saved_model(tmp_path) == expected


def test_summary_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        manifest.summarize_saved_model(tmp_path)
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(DataLoss, match="cannot parse"):
        manifest.summarize_saved_model(tmp_path)


def test_manifest_for_directory(tmp_path: Path) -> None:
    version = tmp_path / "123"
    version.mkdir()
    for source in HALF_PLUS_TWO.rglob("*"):
        if source.is_file():
            target = version / source.relative_to(HALF_PLUS_TWO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    big = os.urandom(CHUNK_BYTES + 3)  # crosses a chunk boundary
    (version / "assets" / "big.bin").write_bytes(big)
    (version / manifest.MANIFEST_NAME).write_text("stale, must be ignored")
    now = datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)

    m = manifest.manifest_for_directory(version, "half", 123, "rollway/test", workers=3, now=now)

    paths = [entry.path for entry in m.files]
    assert paths == sorted(paths) and manifest.MANIFEST_NAME not in paths
    assert "variables/variables.data-00000-of-00001" in paths and "assets/big.bin" in paths
    for entry in m.files:
        data = (version / entry.path).read_bytes()
        assert (entry.size, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert m.total_bytes == sum(entry.size for entry in m.files)
    assert m.created_at.ToDatetime(datetime.timezone.utc) == now
    assert (m.model, m.version, m.created_by) == ("half", 123, "rollway/test")
    assert m.saved_model == manifest.summarize_saved_model(HALF_PLUS_TWO)
    assert manifest.decode(manifest.encode(m)) == m


def test_manifest_for_directory_refuses_what_it_cannot_publish(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        manifest.manifest_for_directory(tmp_path / "absent", "m", 1, "t")
    (tmp_path / "saved_model.pb").write_bytes((HALF_PLUS_TWO / "saved_model.pb").read_bytes())
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "variables")
    with pytest.raises(InvalidArgument, match="links to a directory"):
        manifest.manifest_for_directory(tmp_path, "m", 1, "t")
