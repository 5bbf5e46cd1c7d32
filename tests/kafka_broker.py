"""The session's Kafka broker fixture (tansu; see functions/devstack/tansu.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from functions.devstack.tansu import TANSU, TansuBroker

__all__ = ["TANSU", "TansuBroker", "kafka"]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One tansu broker for the whole session; tests use their own topic names."""
    broker = TansuBroker(tmp_path_factory.mktemp("tansu") / "tansu.log")
    yield broker
    broker.stop()
