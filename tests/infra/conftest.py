"""Fixtures for the infra tests: each overlay rendered once per session."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from tests.infra.validation import INFRA, render

OVERLAYS = ("dev", "prod")

Doc = dict[str, Any]


@functools.cache
def rendered(overlay: str) -> tuple[Doc, ...]:
    return tuple(render(INFRA / "overlays" / overlay))


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def docs(overlay: str) -> tuple[Doc, ...]:
    return rendered(overlay)
