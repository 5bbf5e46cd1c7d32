"""What the assignments source needs to know, and nothing else: the flags of
``rollway serve --assignments`` (the server builds this from its options)."""

from __future__ import annotations

from dataclasses import dataclass

FOLLOW_MODES = ("none", "poll", "kafka")


@dataclass(frozen=True)
class AssignmentSettings:
    store: str  # --assignments: the serving store's URI
    models: tuple[str, ...] = ()  # --models; empty: every model with an assignment
    pin_generation: int = 0  # --pin_generation; 0: the newest
    follow: str = "none"  # --follow: none, poll or kafka
    follow_poll_seconds: float = 5.0
    kafka_bootstrap_servers: str = ""
    topic: str = "model-assignments"  # --assignments_topic
    cache_dir: str = ""  # --cache_dir; empty: a temporary directory, deleted at exit
    timeout_seconds: float = 600.0  # --assignment_timeout_seconds
