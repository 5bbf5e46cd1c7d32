"""Which versions to load and which to unload: TF Serving's
AvailabilityPreservingPolicy, as pure functions of the versions' states.

The manager is the mechanism: it calls :func:`transitions` whenever the aspired
set or a version's state changes, and carries out the answer. Rules:

* **Load** every aspired version the manager does not hold yet, newest first.
  A version that ended (unloaded, or failed) is loaded again when it is aspired
  again, except one that failed and whose content has not changed since (it
  would only fail again; rollway retries it once its files change, where TF
  Serving would strand it).
* **Unload** AVAILABLE versions that are no longer aspired, oldest first, but
  never leave the model with nothing to serve while an aspired version could
  still take over: while no aspired version is AVAILABLE, the newest unaspired
  one stays. With no aspired versions at all (the model left the config),
  everything unloads. A version a label still points to (``pinned``) stays
  until the label moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from functions.serving.core.lifecycle import VersionState


@dataclass(frozen=True)
class VersionView:
    """What the policy needs to know of one version the manager holds."""

    state: VersionState
    failed: bool = False  # ended with an error
    changed: bool = False  # its content changed since it failed


@dataclass(frozen=True)
class Transitions:
    load: tuple[int, ...] = ()  # newest first
    unload: tuple[int, ...] = ()  # oldest first


def to_load(versions: Mapping[int, VersionView], aspired: frozenset[int]) -> tuple[int, ...]:
    def wanted(number: int) -> bool:
        view = versions.get(number)
        if view is None:
            return True
        if view.state is not VersionState.END:
            return False  # loading, loaded or unloading: in hand
        return not view.failed or view.changed

    return tuple(v for v in sorted(aspired, reverse=True) if wanted(v))


def to_unload(
    versions: Mapping[int, VersionView],
    aspired: frozenset[int],
    pinned: frozenset[int] = frozenset(),
) -> tuple[int, ...]:
    ready = {v for v, view in versions.items() if view.state is VersionState.AVAILABLE}
    candidates = sorted(ready - aspired - pinned)
    if not aspired or ready & aspired:
        return tuple(candidates)
    # Nothing aspired serves yet: the newest unaspired version (or a pinned one) holds on.
    keep = 0 if pinned & ready else 1
    return tuple(candidates[: max(len(candidates) - keep, 0)])


def transitions(
    versions: Mapping[int, VersionView],
    aspired: frozenset[int],
    pinned: frozenset[int] = frozenset(),
) -> Transitions:
    return Transitions(to_load(versions, aspired), to_unload(versions, aspired, pinned))
