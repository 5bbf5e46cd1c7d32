"""Version policy: which of the versions found should be served.

A pure function, as TensorFlow Serving's ``ServableVersionPolicy`` in
``FileSystemStoragePathSource``: (versions found, policy) -> aspired set.
No I/O and no clock, so it is tested with tables of cases.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from loader.errors import ConfigError


class PolicyKind(enum.Enum):
    LATEST = "latest"
    ALL = "all"
    SPECIFIC = "specific"


@dataclass(frozen=True)
class VersionPolicy:
    """``latest {num_versions}``, ``all {}`` or ``specific {versions}``."""

    kind: PolicyKind = PolicyKind.LATEST
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.kind is PolicyKind.LATEST and self.num_versions < 1:
            raise ConfigError(
                f"model_version_policy.latest.num_versions must be at least 1, "
                f"got {self.num_versions}"
            )
        if self.kind is PolicyKind.SPECIFIC and not self.versions:
            raise ConfigError(
                "model_version_policy.specific.versions must name at least one version"
            )

    @classmethod
    def latest(cls, num_versions: int = 1) -> VersionPolicy:
        return cls(PolicyKind.LATEST, num_versions=num_versions)

    @classmethod
    def all(cls) -> VersionPolicy:
        return cls(PolicyKind.ALL)

    @classmethod
    def specific(cls, versions: Iterable[int]) -> VersionPolicy:
        return cls(PolicyKind.SPECIFIC, versions=frozenset(versions))

    def describe(self) -> str:
        if self.kind is PolicyKind.LATEST:
            return f"latest {self.num_versions}"
        if self.kind is PolicyKind.ALL:
            return "all"
        return "specific " + ",".join(str(v) for v in sorted(self.versions))


def aspired_versions(found: Iterable[int], policy: VersionPolicy) -> frozenset[int]:
    """The versions to serve among ``found``.

    ``latest N`` takes the N highest; ``all`` takes every one; ``specific``
    takes those listed that exist (a listed version that is absent is simply
    not aspired yet, as in TF Serving).
    """
    present = frozenset(found)
    if policy.kind is PolicyKind.ALL:
        return present
    if policy.kind is PolicyKind.SPECIFIC:
        return present & policy.versions
    return frozenset(sorted(present, reverse=True)[: policy.num_versions])
