"""rollway's one boolean vocabulary, for every flag and environment variable.

It lives in ``loader`` (which may not import ``functions``) so that the loader's
own environment switches (``loader.storage.s3``: ``S3_USE_HTTPS``,
``S3_VERIFY_SSL``) and ``functions.settings`` (every command's flags, and the
Knative functions' variables) accept the same words.

Contract of :func:`parse_bool`: case-insensitive and ignoring surrounding
spaces, ``true``/``1``/``yes``/``on``/``t``/``y`` are true and
``false``/``0``/``no``/``off``/``f``/``n`` are false. Anything else, the empty
string included, raises ``ValueError``: whether a blank value means "unset, take
the default" is the caller's rule (``functions.settings`` and ``S3Settings``
both say it does), not the vocabulary's.
"""

from __future__ import annotations

TRUE_WORDS = ("true", "1", "yes", "on", "t", "y")
FALSE_WORDS = ("false", "0", "no", "off", "f", "n")
# For messages: what a boolean may be, in one phrase.
BOOL_WORDS = "true or false (or 1/0, yes/no, on/off, t/f, y/n)"


def parse_bool(text: str) -> bool:
    """``text`` as a boolean; ValueError (saying what is accepted) otherwise."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"must be {BOOL_WORDS}, not {text!r}")
