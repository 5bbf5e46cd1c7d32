"""The version manifest: proof that a model version is complete, as a value.

``rollway publish`` uploads every file of ``<base>/<model>/<version>/`` and then,
LAST, ``rollway-manifest.json``: a ``rollway.v1.VersionManifest`` in the proto3
JSON mapping listing each file's path, size and sha256. Its presence therefore
means every listed file was fully written first.

``decode`` is strict and reports every problem at once in a ``ManifestError``,
a ``DataLoss``: the caller only named a location, and the bytes stored there
are not the manifest they claim to be (not ``InvalidArgument``, which blames
the caller). Retrying does not fix stored bytes, so it is not retriable.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from google.protobuf import json_format

from loader import proto_json
from loader.errors import DataLoss, InvalidArgument, NotFound
from loader.schemas.rollway.v1 import manifest_pb2
from loader.storage.base import CHUNK_BYTES

VersionManifest = manifest_pb2.VersionManifest
SavedModelSummary = manifest_pb2.SavedModelSummary

MANIFEST_NAME = "rollway-manifest.json"
SCHEMA_VERSION = 1
# A manifest is about 150 bytes per file; these bound what a reader will parse.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_FILES = 50_000

_SHA256 = re.compile(r"[0-9a-f]{64}")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


class ManifestError(DataLoss):
    """A manifest that is not valid; ``problems`` lists every reason, in order."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid version manifest: " + "; ".join(self.problems))


def encode(manifest: VersionManifest) -> bytes:
    """Canonical proto3 JSON: lowerCamelCase names, every field printed, in
    declaration order, 2-space indent, trailing newline. Equal messages always
    yield equal bytes, and the file reads in the order of the .proto."""
    document = json_format.MessageToDict(manifest, always_print_fields_with_no_presence=True)
    ordered = _in_field_order(document, VersionManifest.DESCRIPTOR)
    return (json.dumps(ordered, indent=2) + "\n").encode("utf-8")


def _in_field_order(value: Any, message: Any) -> Any:
    if not isinstance(value, dict) or message.file.package != "rollway.v1":
        return value
    ordered: dict[str, Any] = {}
    for field in message.fields:
        if field.json_name in value:
            item, sub = value[field.json_name], field.message_type
            if isinstance(item, list):
                ordered[field.json_name] = [_in_field_order(i, sub) for i in item]
            else:
                ordered[field.json_name] = _in_field_order(item, sub)
    return ordered


def decode(data: bytes) -> VersionManifest:
    """Parses and validates a stored manifest; ``ManifestError`` lists every problem."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError([f"manifest is {len(data)} bytes, over the {MAX_MANIFEST_BYTES} limit"])
    unknown: list[str] = []  # reported with every other problem, at once
    try:
        document = proto_json.load_object(data)
        manifest = proto_json.to_message(document, VersionManifest(), unknown)
    except proto_json.ProtoJsonError as err:
        problems = [*unknown, *err.problems]
        raise ManifestError([f"manifest {problem}" for problem in problems]) from None
    problems = [f"manifest {problem}" for problem in unknown] + validate(manifest)
    if problems:
        raise ManifestError(problems)
    return manifest


def validate(manifest: VersionManifest) -> list[str]:
    """Every rule a parsed manifest breaks (empty when valid)."""
    problems: list[str] = []
    if manifest.schema_version != SCHEMA_VERSION:
        problems.append(
            f"unknown schema_version {manifest.schema_version} (this reader knows {SCHEMA_VERSION})"
        )
    if not manifest.model:
        problems.append("model name is empty")
    if manifest.version < 0:
        problems.append(f"version {manifest.version} is negative")
    if len(manifest.files) > MAX_FILES:
        problems.append(f"{len(manifest.files)} files listed, over the {MAX_FILES} limit")
    seen: set[str] = set()
    for index, entry in enumerate(manifest.files):
        where = f"files[{index}] {entry.path!r}"
        problems += [f"{where}: {p}" for p in path_problems(entry.path)]
        if entry.path in seen:
            problems.append(f"{where}: duplicate path")
        seen.add(entry.path)
        if entry.size < 0:
            problems.append(f"{where}: negative size {entry.size}")
        if not _SHA256.fullmatch(entry.sha256):
            problems.append(f"{where}: sha256 {entry.sha256!r} is not 64 lowercase hex digits")
    total = sum(entry.size for entry in manifest.files)
    if manifest.total_bytes != total:
        problems.append(f"total_bytes is {manifest.total_bytes}, but the files sum to {total}")
    return problems


def path_problems(path: str) -> list[str]:
    """Why ``path`` cannot name a file inside a version directory (empty if it can)."""
    if not path:
        return ["empty path"]
    problems = []
    if path.startswith("/"):
        problems.append("absolute path")
    if "\\" in path or "\0" in path:
        problems.append("path contains a backslash or NUL")
    if any(part in ("", ".", "..") for part in path.lstrip("/").split("/")):
        problems.append("path has an empty, '.' or '..' segment")
    if path == MANIFEST_NAME:
        problems.append("the manifest lists itself")
    return problems


def sha256_stream(
    reader: BinaryIO,
    on_bytes: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> tuple[int, str]:
    """(bytes read, hex sha256) of ``reader`` to its end, CHUNK_BYTES at a time.

    Memory stays at one chunk per caller; hashlib releases the GIL on buffers this
    large, so several threads hash in parallel. ``stop`` abandons the read early.
    """
    digest, total = hashlib.sha256(), 0
    while not (stop is not None and stop.is_set()):
        chunk = reader.read(CHUNK_BYTES)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
    return total, digest.hexdigest()


def local_files(path: str | os.PathLike[str]) -> list[str]:
    """Relative '/'-paths of every file under ``path`` but a top-level manifest, sorted.

    Links to files count as files; a link to a directory or a special file is
    InvalidArgument (a publish must not silently skip data).
    """
    root = Path(path)
    if not root.is_dir():
        raise NotFound(f"{root} is not a directory")
    relative: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise InvalidArgument(f"{os.path.join(dirpath, name)} links to a directory")
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.isfile(full):
                raise InvalidArgument(f"{full} is not a regular file")
            relative.append(Path(full).relative_to(root).as_posix())
    return sorted(rel for rel in relative if rel != MANIFEST_NAME)


def file_entries(path: str | os.PathLike[str], workers: int = 8) -> list[manifest_pb2.FileEntry]:
    """A FileEntry for each of ``local_files(path)``, hashed by ``workers`` threads."""

    def entry(rel: str) -> manifest_pb2.FileEntry:
        with (Path(path) / rel).open("rb") as reader:
            size, sha = sha256_stream(reader)
        return manifest_pb2.FileEntry(path=rel, size=size, sha256=sha)

    relative = local_files(path)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hash") as pool:
        return list(pool.map(entry, relative))


def manifest_for_directory(
    path: str | os.PathLike[str],
    model: str,
    version: int,
    created_by: str,
    workers: int = 8,
    *,
    now: datetime.datetime | None = None,
) -> VersionManifest:
    """The manifest for the SavedModel version in local directory ``path``.

    Hashes files in parallel (``workers`` threads, one chunk of memory each).
    Raises NotFound/DataLoss when the directory holds no readable SavedModel,
    and InvalidArgument when the result would not pass ``validate``.
    """
    manifest = VersionManifest(
        schema_version=SCHEMA_VERSION,
        model=model,
        version=version,
        files=file_entries(path, workers),
        saved_model=summarize_saved_model(path),
        created_by=created_by,
    )
    manifest.total_bytes = sum(entry.size for entry in manifest.files)
    manifest.created_at.FromDatetime(now or datetime.datetime.now(datetime.timezone.utc))
    problems = validate(manifest)
    if problems:
        raise InvalidArgument(f"cannot write a manifest for {path}: " + "; ".join(problems))
    return manifest


def summarize_saved_model(source: str | os.PathLike[str] | bytes) -> SavedModelSummary:
    """Tags and signatures of a SavedModel: a directory, or the bytes of saved_model.pb.

    NotFound if the directory has neither saved_model.pb nor .pbtxt; DataLoss if
    the file does not parse. Imports TensorFlow (for its SavedModel proto); where
    TensorFlow is not installed (the loader image), the summary is left empty:
    it is informational, and completeness never depends on it.
    """
    from google.protobuf import message, text_format

    try:
        from tensorflow.core.framework import types_pb2
        from tensorflow.core.protobuf import saved_model_pb2
    except ImportError:
        if not isinstance(source, bytes) and not any(
            (Path(source) / n).is_file() for n in SAVED_MODEL_FILES
        ):
            raise NotFound(f"no saved_model.pb or saved_model.pbtxt in {source}") from None
        logging.getLogger(__name__).warning(
            "TensorFlow is not installed: the manifest's SavedModel summary is left empty"
        )
        return SavedModelSummary()

    saved = saved_model_pb2.SavedModel()
    name = "saved_model.pb"
    try:
        if isinstance(source, bytes):
            saved.ParseFromString(source)
        else:
            directory = Path(source)
            found = [directory / n for n in SAVED_MODEL_FILES if (directory / n).is_file()]
            if not found:
                raise NotFound(f"no saved_model.pb or saved_model.pbtxt in {directory}")
            name = str(found[0])
            if found[0].suffix == ".pb":
                saved.ParseFromString(found[0].read_bytes())
            else:
                text_format.Parse(found[0].read_text(encoding="utf-8"), saved)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as err:
        raise DataLoss(f"cannot parse {name} as a SavedModel: {err}") from None

    dtypes = {v.number: v.name for v in types_pb2.DataType.DESCRIPTOR.values}
    summary = SavedModelSummary()
    for meta_graph in saved.meta_graphs:
        meta = summary.meta_graphs.add(tags=list(meta_graph.meta_info_def.tags))
        for sig_name, signature in sorted(meta_graph.signature_def.items()):
            sig = meta.signatures.add(name=sig_name, method_name=signature.method_name)
            for infos, out in ((signature.inputs, sig.inputs), (signature.outputs, sig.outputs)):
                for key, info in sorted(infos.items()):
                    tensor = out.add(name=key, dtype=dtypes.get(info.dtype, f"DT_{info.dtype}"))
                    # No tensor_shape at all meant "unknown shape" to TF 1.x (see
                    # functions/serving/saved_model.py).
                    if not info.HasField("tensor_shape") or info.tensor_shape.unknown_rank:
                        tensor.unknown_rank = True
                    else:
                        tensor.shape.extend(dim.size for dim in info.tensor_shape.dim)
    return summary
