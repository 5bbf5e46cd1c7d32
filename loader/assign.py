"""Assign: which staged versions a model serves, and its labels. Pure policy.

``assign`` is to the assignment what ``policy.aspired_versions`` is to a
directory listing: (staged versions, model config, operator intents, previous
assignment) -> the next assignment, or None when nothing changes. No I/O and no
clock (the caller passes ``changed_at``), so it is tested with tables of cases.

Rules, in order:

1. **Versions.** While the operator has pinned versions (``rollway pin``,
   ``rollway rollback``), the pinned versions that are staged; otherwise the
   model's version policy over every staged version (``latest 1`` when the model
   is not in the config). ``staged`` is the *whole* staged set, so a version that
   arrives late (older than the newest N) never displaces newer ones.
2. **Nothing to serve is not an assignment.** If rule 1 selects no version, the
   previous generation stays in force (None): an empty server is never ready.
3. **Labels.** The config's labels, except those the operator *owns* (set with
   ``rollway label`` or removed with ``--remove``), plus the operator's labels.
   Once an operator touches a label, the config no longer decides it: a label
   removed by hand stays removed, and a rollback is not undone by the config.
4. **A label must point to a served version.** TF Serving refuses to label a
   version that is not available; likewise ``assign`` raises FailedPrecondition
   naming the label, and no generation is made (the previous one stays).
5. **Idempotent.** Same versions (number, URI, manifest digest) and labels as
   ``previous``: None. Otherwise generation = previous.generation + 1 (1 first).

The loader calls ``assign`` through ``policy_update``; operator commands, which
do not read the model config, go through ``reassign`` with the same rules.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from loader.errors import FailedPrecondition, InvalidArgument
from loader.model_config import ModelSpec
from loader.policy import VersionPolicy, aspired_versions
from loader.schemas.rollway.v1.assignment_pb2 import (
    AssignedVersion,
    AssignmentChanged,
    AssignmentDocument,
)

# The version policy of a model that is not in the model config (TF Serving's default).
DEFAULT_POLICY = VersionPolicy.latest(1)

Update = Callable[[AssignmentDocument | None], AssignmentDocument | None]


@dataclass(frozen=True, order=True)
class StagedVersion:
    """A verified version in the serving store, as an assignment names it."""

    version: int
    version_uri: str
    manifest_sha256: str

    def to_proto(self) -> AssignedVersion:
        return AssignedVersion(
            version=self.version, version_uri=self.version_uri, manifest_sha256=self.manifest_sha256
        )

    @classmethod
    def from_proto(cls, message: AssignedVersion) -> StagedVersion:
        return cls(message.version, message.version_uri, message.manifest_sha256)


@dataclass(frozen=True)
class OperatorIntents:
    """What operators asked for, kept in the AssignmentDocument across generations.

    Invariant: a label is in at most one of ``label_overrides`` and ``removed_labels``.
    """

    pinned_versions: frozenset[int] = frozenset()
    label_overrides: Mapping[str, int] = field(default_factory=dict)
    removed_labels: frozenset[str] = frozenset()

    def owns(self, label: str) -> bool:
        """True when the operator, not the model config, decides ``label``."""
        return label in self.label_overrides or label in self.removed_labels

    def with_labels(self, set_: Mapping[str, int], remove: Iterable[str] = ()) -> OperatorIntents:
        removed = frozenset(remove)
        if both := sorted(removed & set_.keys()):
            raise InvalidArgument(f"label {both[0]!r} is both set and removed")
        overrides = {k: v for k, v in self.label_overrides.items() if k not in removed}
        overrides.update(set_)
        return OperatorIntents(
            self.pinned_versions, overrides, (self.removed_labels - set_.keys()) | removed
        )

    def with_pins(self, versions: Iterable[int]) -> OperatorIntents:
        return OperatorIntents(frozenset(versions), self.label_overrides, self.removed_labels)

    @classmethod
    def from_document(cls, document: AssignmentDocument | None) -> OperatorIntents:
        if document is None:
            return cls()
        return cls(
            frozenset(document.pinned_versions),
            dict(document.label_overrides),
            frozenset(document.removed_labels),
        )

    def write_to(self, document: AssignmentDocument) -> None:
        del document.pinned_versions[:]
        document.pinned_versions.extend(sorted(self.pinned_versions))
        document.label_overrides.clear()
        document.label_overrides.update(self.label_overrides)
        del document.removed_labels[:]
        document.removed_labels.extend(sorted(self.removed_labels))


def assign(
    model: str,
    staged: Mapping[int, StagedVersion],
    spec: ModelSpec | None,
    previous: AssignmentChanged | None,
    *,
    intents: OperatorIntents | None = None,
    cause: str = "",
    changed_at: datetime.datetime | None = None,
) -> AssignmentChanged | None:
    """The next assignment of ``model``, or None if it would not change (rules above).

    ``staged`` maps every staged version number of the model to its StagedVersion.
    Raises InvalidArgument for inconsistent inputs and FailedPrecondition for a
    label that would point to a version not served.
    """
    intents = intents or OperatorIntents()
    _check_inputs(model, staged, spec, previous)
    if intents.pinned_versions:
        chosen = frozenset(staged) & intents.pinned_versions
    else:
        chosen = aspired_versions(staged, spec.policy if spec else DEFAULT_POLICY)
    if not chosen:
        return None
    labels = merged_labels(spec.labels if spec else {}, intents)
    _check_labels(model, labels, chosen, intents)
    versions = [staged[v] for v in sorted(chosen)]
    if previous is not None and _same(previous, versions, labels):
        return None
    return next_generation(previous, model, versions, labels, cause=cause, changed_at=changed_at)


def merged_labels(config: Mapping[str, int], intents: OperatorIntents) -> dict[str, int]:
    """The config's labels the operator does not own, then the operator's own."""
    labels = {k: v for k, v in config.items() if not intents.owns(k)}
    labels.update(intents.label_overrides)
    return labels


def next_generation(
    previous: AssignmentChanged | None,
    model: str,
    versions: Iterable[StagedVersion],
    labels: Mapping[str, int],
    *,
    cause: str = "",
    changed_at: datetime.datetime | None = None,
) -> AssignmentChanged:
    """A new generation (previous + 1, or 1) with exactly these versions and labels."""
    message = AssignmentChanged(
        model=model,
        generation=(previous.generation + 1) if previous is not None else 1,
        versions=[v.to_proto() for v in sorted(versions)],
        labels=dict(labels),
        cause=cause,
    )
    if changed_at is not None:
        message.changed_at.FromDatetime(changed_at)
    return message


def known_versions(
    document: AssignmentDocument, first: AssignmentChanged | None = None
) -> dict[int, StagedVersion]:
    """Every version the document names (``first``, then current, then history,
    newest first wins): what operator commands, which do not list the store, may
    pin or roll back to."""
    known: dict[int, StagedVersion] = {}
    sources = [*([first] if first is not None else []), document.current, *document.history]
    for assignment in sources:
        for version in assignment.versions:
            known.setdefault(version.version, StagedVersion.from_proto(version))
    return known


def reassign(
    document: AssignmentDocument,
    intents: OperatorIntents,
    *,
    known: Mapping[int, StagedVersion] | None = None,
    cause: str = "",
    changed_at: datetime.datetime | None = None,
) -> AssignmentDocument | None:
    """The document after an operator command asks for ``intents``, or None when
    neither the assignment nor an intent changes. A changed intent alone still
    makes a generation (e.g. ``pin --clear``), so that the document records it.

    Operator commands do not read the model config: the current labels the
    operator does not own came from it at the loader's last assignment, so they
    stand in for it, and without pins the current versions stand in for the
    version policy. The loader's next ``assign``, with the config, then agrees.
    ``known`` (default: ``known_versions(document)``) is what may be assigned.
    """
    current = document.current
    prior = OperatorIntents.from_document(document)
    served = [v.version for v in current.versions]
    if not served and not intents.pinned_versions:
        raise FailedPrecondition(f"model {current.model} has no assigned version")
    spec = ModelSpec(
        name=current.model,
        base_path="",
        policy=VersionPolicy.specific(served) if served else DEFAULT_POLICY,
        labels={k: v for k, v in current.labels.items() if not prior.owns(k)},
    )
    staged = known_versions(document) if known is None else known
    new = assign(
        current.model, staged, spec, current, intents=intents, cause=cause, changed_at=changed_at
    )
    if new is None:
        if intents == prior:
            return None
        versions = [StagedVersion.from_proto(v) for v in current.versions]
        new = next_generation(
            current, current.model, versions, current.labels, cause=cause, changed_at=changed_at
        )
    return with_current(document, new, intents)


def rollback_intents(document: AssignmentDocument) -> OperatorIntents:
    """Intents that make history[0] the assignment and keep it there: its versions
    pinned (a replayed publish event must not roll forward again) and its labels
    owned by the operator. ``rollway pin --clear`` hands versions back to the policy."""
    if not document.history:
        raise FailedPrecondition(
            f"model {document.current.model} has no earlier generation to roll back to"
        )
    target = document.history[0]
    prior = OperatorIntents.from_document(document)
    wanted = dict(target.labels)
    dropped = {*prior.removed_labels, *document.current.labels, *prior.label_overrides}
    return OperatorIntents(
        frozenset(v.version for v in target.versions), wanted, frozenset(dropped - set(wanted))
    )


def with_current(
    document: AssignmentDocument | None,
    current: AssignmentChanged,
    intents: OperatorIntents | None = None,
) -> AssignmentDocument:
    """A new document holding ``current`` and the intents (those of ``document``
    unless given). History is the store's to fill: ``assignments.commit`` does it."""
    result = AssignmentDocument(current=current)
    (intents if intents is not None else OperatorIntents.from_document(document)).write_to(result)
    return result


def policy_update(
    model: str,
    staged: Mapping[int, StagedVersion],
    spec: ModelSpec | None,
    *,
    cause: str = "",
    changed_at: datetime.datetime | None = None,
) -> Update:
    """The loader's update for ``assignments.commit``: ``assign`` against the stored
    document, keeping the operator's intents."""

    def update(document: AssignmentDocument | None) -> AssignmentDocument | None:
        previous = document.current if document is not None else None
        intents = OperatorIntents.from_document(document)
        current = assign(
            model, staged, spec, previous, intents=intents, cause=cause, changed_at=changed_at
        )
        return None if current is None else with_current(document, current)

    return update


def _check_inputs(
    model: str,
    staged: Mapping[int, StagedVersion],
    spec: ModelSpec | None,
    previous: AssignmentChanged | None,
) -> None:
    if spec is not None and spec.name != model:
        raise InvalidArgument(f"model config for {spec.name!r} given to assign {model!r}")
    if previous is not None and previous.model != model:
        raise InvalidArgument(f"previous assignment is of {previous.model!r}, not {model!r}")
    for number, version in staged.items():
        if number != version.version or number < 0:
            raise InvalidArgument(f"staged version {number} of {model} is {version}")


def _check_labels(
    model: str, labels: Mapping[str, int], chosen: frozenset[int], intents: OperatorIntents
) -> None:
    for label, version in sorted(labels.items()):
        if version not in chosen:
            by = "rollway label" if label in intents.label_overrides else "the model config"
            served = ",".join(str(v) for v in sorted(chosen))
            raise FailedPrecondition(
                f"label {label!r} of model {model} (set by {by}) points to version {version}, "
                f"which would not be served (versions: {served}); move or remove the label, "
                "or pin or widen the versions"
            )


def _same(
    previous: AssignmentChanged, versions: list[StagedVersion], labels: Mapping[str, int]
) -> bool:
    before = sorted(StagedVersion.from_proto(v) for v in previous.versions)
    return before == versions and dict(previous.labels) == dict(labels)
