"""Model versions on a file system: naming, discovery and content fingerprints.

As in TensorFlow Serving, a version is a child directory of the model's base
path whose name is a non-negative decimal integer (``00000123`` is version
123). Any other child is ignored.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

_VERSION_NAME = re.compile(r"[0-9]+")
# TF Serving stores versions as int64.
MAX_VERSION = 2**63 - 1


@dataclass(frozen=True, order=True)
class VersionId:
    """One version of one model."""

    model: str
    version: int

    def __str__(self) -> str:
        return f"{self.model}:{self.version}"


def parse_version(name: str) -> int | None:
    """The version number a directory name stands for, or None if it is not one."""
    if not _VERSION_NAME.fullmatch(name):
        return None
    number = int(name)
    return number if number <= MAX_VERSION else None


def scan_versions(base_path: str | os.PathLike[str]) -> dict[int, Path]:
    """Maps version number to directory for every version under ``base_path``.

    A missing or unreadable base path yields no versions; the caller decides
    whether that is an error. When two names denote one number (``7`` and
    ``007``) the lexically first wins, so the result is deterministic.
    """
    found: dict[int, Path] = {}
    try:
        entries = sorted(os.scandir(base_path), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        number = parse_version(entry.name)
        if number is None or number in found:
            continue
        try:
            if entry.is_dir():
                found[number] = Path(entry.path)
        except OSError:
            continue
    return found


def content_fingerprint(path: str | os.PathLike[str]) -> str:
    """A digest of the tree's file names, sizes and modification times.

    Cheap (no file contents are read), and it changes whenever a file is
    added, removed, rewritten or touched; used to retry a failed version once
    its files change.
    """
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            rel = os.path.relpath(full, path)
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()
