"""``python -m functions.loader_function``: the loader function under func-python's
own server (hypercorn), as a ``func build`` image runs it, for local runs, the
tests and ``infra/images/loader.Containerfile``.

It listens on ``LISTEN_ADDRESS`` (func-python's variable, e.g. ``127.0.0.1:8080``;
default ``[::]:8080`` plus ``0.0.0.0:8080``), or, when only Knative's ``PORT`` is
set, on every address at that port. The configuration (``ROLLWAY_*``, as for
``rollway loader``) is checked before serving, so a bad one exits with status 2
and a message naming the bad variable.
"""

from __future__ import annotations

import sys

from functions import func_runtime
from functions.loader_function.function.func import new, settings_from

if __name__ == "__main__":
    sys.exit(func_runtime.run("rollway loader function", settings_from, new))
