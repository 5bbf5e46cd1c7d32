"""``python -m functions.rollout_function``: the rollout function under
func-python's own server (hypercorn), as a ``func build`` image runs it.

It listens on ``LISTEN_ADDRESS`` (func-python's variable, e.g. ``127.0.0.1:8080``;
default ``[::]:8080`` plus ``0.0.0.0:8080``), or, when only Knative's ``PORT`` is
set, on every address at that port. The configuration (the ``ROLLWAY_*``
variables of ``rollway rollout run``) is checked before serving, so a bad one
exits with status 2 and a message naming the bad variable.
"""

from __future__ import annotations

import os
import sys

from functions.rollout.settings import config_from_env
from functions.rollout_function.function.func import new
from loader.errors import RollwayError


def main() -> int:
    try:
        config_from_env(os.environ)
    except RollwayError as err:
        print(f"rollway rollout function: {err.message}", file=sys.stderr)
        return 2
    port = os.environ.get("PORT", "")
    if "LISTEN_ADDRESS" not in os.environ and port.isdigit():
        os.environ["LISTEN_ADDRESS"] = f"[::]:{port}"  # func-python adds 0.0.0.0:{port}
    from func_python.http import serve  # type: ignore[import-untyped]

    serve(new)  # returns after SIGTERM or SIGINT, once stop() has run
    return 0


if __name__ == "__main__":
    sys.exit(main())
