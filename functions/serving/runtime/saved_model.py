"""Reading a SavedModel directory before TensorFlow loads it: the parsed file,
with TF Serving's errors for a missing or corrupt one, and the MetaGraph whose
tag set matches (its SignatureDefs are what GetModelMetadata returns and what
requests are checked against).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from loader.errors import Code, LoadError


def read_saved_model(path: Path) -> Any:
    """The parsed ``saved_model.pb`` (or ``.pbtxt``); LoadError if absent or corrupt."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    pb, pbtxt = path / "saved_model.pb", path / "saved_model.pbtxt"
    try:
        if pb.is_file():
            saved.ParseFromString(pb.read_bytes())
        elif pbtxt.is_file():
            from google.protobuf import text_format

            text_format.Parse(pbtxt.read_text(encoding="utf-8"), saved)
        else:
            raise LoadError(
                f"SavedModel file does not exist at: {path}/{{saved_model.pbtxt|saved_model.pb}}",
                Code.NOT_FOUND,
            )
    except (DecodeError, UnicodeDecodeError, ValueError) as err:
        # TF Serving's wording and code for a corrupt file.
        raise LoadError(f"Can't parse {pb} as binary proto: {err}", Code.DATA_LOSS) from err
    except OSError as err:
        raise LoadError(f"cannot read the SavedModel at {path}: {err}", Code.UNAVAILABLE) from err
    return saved


def select_meta_graph(saved: Any, tags: Iterable[str], path: Path) -> Any:
    """The MetaGraphDef whose tag set equals ``tags``, as TensorFlow's loader picks it."""
    wanted = set(tags)
    for meta_graph in saved.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    available = [sorted(m.meta_info_def.tags) for m in saved.meta_graphs]
    raise LoadError(
        f"MetaGraphDef associated with tags {sorted(wanted)} could not be found in "
        f"SavedModel at {path}; available tag sets: {available}",
        Code.NOT_FOUND,
    )
