"""VersionRef: one version a source found, as the manager sees it.

The manager needs only a version's number, a name for messages, and a cheap
fingerprint that changes when the version's files change (so a version that
failed is loaded again once its files are replaced). Where the files are and
how they become a loadable local directory is the source's business
(``functions/serving/repository.py``); this module imports no storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loader.versions import content_fingerprint


@dataclass(frozen=True)
class VersionRef:
    version: int
    #: The version's directory: a local path, or a URI without credentials. Safe to log.
    location: str
    #: Its directory name under the base path ("7", or "007" for the same version).
    name: str
    #: The base path it was found under, as ``location`` shows it.
    base: str
    has_manifest: bool = False
    #: Of the listing the version was found in; "" means "compute it from ``path``".
    fingerprint: str = ""
    #: The version's directory when it is on local disk, else None.
    path: Path | None = None

    @classmethod
    def local(cls, version: int, path: Path, has_manifest: bool = False) -> VersionRef:
        """A version directory on local disk, fingerprinted lazily from its files."""
        return cls(version, str(path), path.name, str(path.parent), has_manifest, path=path)

    def content_fingerprint(self) -> str:
        """Changes whenever the version's files change. For a local version
        without a listing fingerprint, this walks the directory (stat only)."""
        if self.fingerprint or self.path is None:
            return self.fingerprint
        return content_fingerprint(self.path)
