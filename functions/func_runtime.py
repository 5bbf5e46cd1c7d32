"""Running a Knative function module locally, with the runtime ``func`` uses.

``python -m functions.loader_function`` and ``python -m functions.rollout_function``
check their configuration first (exit 2 naming the bad variable), then serve
``new`` with func-python, bound to ``LISTEN_ADDRESS``, or all addresses on
Knative's ``PORT`` when only that is set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from loader.errors import RollwayError


def run(name: str, check: Callable[[Mapping[str, str]], Any], new: Callable[[], Any]) -> int:
    try:
        check(os.environ)
    except RollwayError as err:
        print(f"{name}: {err.message}", file=sys.stderr)
        return 2
    port = os.environ.get("PORT", "")
    if "LISTEN_ADDRESS" not in os.environ and port.isdigit():
        os.environ["LISTEN_ADDRESS"] = f"[::]:{port}"  # func-python adds 0.0.0.0:{port}
    from func_python.http import serve  # type: ignore[import-untyped]

    serve(new)  # returns after SIGTERM or SIGINT, once stop() has run
    return 0
