"""How rollway's commands end: the exit codes they share, and the one way they
report a failure.

A command never lets an exception reach the shell. It prints one line on
stderr, ``<prog>: <what went wrong>``, and returns its exit code:

* ``OK`` (0): done.
* ``ERROR`` (1): the operation failed (the store, the network, a backend's own
  bug).
* ``USAGE`` (2): the command line or its input is wrong; argparse exits 2 too.

Commands add their own codes above these (``rollway publish``: 3 the version
exists, 5 stored but the event not sent; ``rollway verify``: 3 incomplete,
4 corrupt). A store URI is shown only through :func:`loader.display.uri`,
which drops credentials.
"""

from __future__ import annotations

import sys

from loader import display

OK, ERROR, USAGE = 0, 1, 2


def fail(prog: str, what: str, code: int) -> int:
    """Prints ``<prog>: <what>`` on stderr and returns ``code``."""
    print(f"{prog}: {what}", file=sys.stderr)
    return code


def unexpected(prog: str, err: Exception, uri: str = "", *, at_uri: bool = False) -> int:
    """Reports an exception outside rollway's error tree (a backend's own bug)
    with its type and message, the raw ``uri`` in it replaced by what may be
    shown of it; ``at_uri`` puts that URI first. Returns ``ERROR``."""
    text = str(err).replace(uri, display.uri(uri)) if uri else str(err)
    where = f"{display.uri(uri)}: " if at_uri else ""
    return fail(prog, f"{where}{type(err).__name__}: {text}", ERROR)
