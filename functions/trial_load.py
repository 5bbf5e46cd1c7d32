"""A trial load of a local SavedModel directory, exactly as ``rollway serve`` loads it.

Used by ``rollway publish`` (before uploading) and ``rollway verify --load``.
Returns None on success, or the reason the load failed.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from loader.errors import RollwayError
from loader.versions import VersionId

DEFAULT_TAGS = ("serve",)


def load_problem(
    directory: Path, version: VersionId, tags: tuple[str, ...] = DEFAULT_TAGS
) -> str | None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from functions.serving.dataplane.warmup import WarmupOptions, warmed
    from functions.serving.runtime.loading import RuntimeOptions, load_servable

    # As in serve: TF repeats load-time notices (e.g. TF1 reference variables).
    tf.get_logger().setLevel(logging.ERROR)
    load = functools.partial(load_servable, options=RuntimeOptions(tags=tags))
    try:
        warmed(load, WarmupOptions())(version, directory)
    except Exception as err:  # LoadError, or whatever TensorFlow raises
        return err.message if isinstance(err, RollwayError) else f"{type(err).__name__}: {err}"
    return None
