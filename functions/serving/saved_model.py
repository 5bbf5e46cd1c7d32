"""Reading a SavedModel directory before TensorFlow loads it.

Two jobs: find the MetaGraph whose tag set matches (its SignatureDefs are what
GetModelMetadata returns and what requests are validated against), and give
TensorFlow's Python loader a directory it can load the way TF Serving's C++
loader would.

The second matters for SavedModels written by early TensorFlow 1.x (e.g. TF
Serving's own ``saved_model_half_plus_three``, GraphDef producer 21). There a
SignatureDef tensor without a ``tensor_shape``, and a Placeholder with an
empty ``shape``, mean "unknown shape": the C++ loader honours that, while
``tf.saved_model.load`` reads a scalar and the graph fails shape inference.
For such models the MetaGraph is rewritten with ``unknown_rank: true``, the
meaning it had, into a staging directory whose other entries link to the
originals. GetModelMetadata still returns the SignatureDefs as stored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from loader.errors import Code, LoadError

# GraphDef versions up to this one wrote unknown Placeholder shapes as empty.
LAST_PRODUCER_WITH_EMPTY_UNKNOWN_SHAPES = 21


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


def is_legacy(meta_graph: Any) -> bool:
    return int(meta_graph.graph_def.versions.producer) <= LAST_PRODUCER_WITH_EMPTY_UNKNOWN_SHAPES


def _fix_unknown_shapes(saved: Any) -> bool:
    """Spells out "unknown shape" where TensorFlow's Python loader would read a
    scalar; returns True if anything changed. Two places need it: SignatureDef
    tensors with no ``tensor_shape`` at all, and (producer <= 21 graphs only)
    Placeholders whose ``shape`` is empty.
    """
    changed = False
    for meta_graph in saved.meta_graphs:
        for signature in meta_graph.signature_def.values():
            for info in (*signature.inputs.values(), *signature.outputs.values()):
                if not info.HasField("tensor_shape") and info.WhichOneof("encoding") == "name":
                    info.tensor_shape.unknown_rank = True
                    changed = True
        if not is_legacy(meta_graph):
            continue
        for node in meta_graph.graph_def.node:
            if node.op != "Placeholder" or "shape" not in node.attr:
                continue
            shape = node.attr["shape"].shape
            if not shape.dim and not shape.unknown_rank:
                shape.unknown_rank = True
                changed = True
    return changed


@contextlib.contextmanager
def loadable_directory(path: Path, saved: Any) -> Iterator[Path]:
    """``path`` itself, or a staging copy with a rewritten MetaGraph (see module doc).

    The staging directory holds only the new ``saved_model.pb`` and symbolic
    links to the rest, and is removed once the caller has loaded the model.
    """
    fixed = type(saved)()
    fixed.CopyFrom(saved)
    if not _fix_unknown_shapes(fixed):
        yield path
        return
    staging = Path(tempfile.mkdtemp(prefix="rollway-legacy-"))
    try:
        for entry in path.iterdir():
            if entry.name not in ("saved_model.pb", "saved_model.pbtxt"):
                os.symlink(entry.resolve(), staging / entry.name)
        (staging / "saved_model.pb").write_bytes(fixed.SerializeToString())
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
