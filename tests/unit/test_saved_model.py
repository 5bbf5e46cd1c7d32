"""functions/serving/saved_model.py on real SavedModel files."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorflow.core.protobuf import saved_model_pb2

from functions.serving import saved_model
from loader.errors import Code, LoadError

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tf_serving"
HALF_PLUS_THREE = TESTDATA / "saved_model_half_plus_three" / "00000123"
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu" / "00000123"


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as info:
        saved_model.read_saved_model(tmp_path)
    assert info.value.code is Code.NOT_FOUND
    assert "SavedModel file does not exist" in info.value.message


def test_corrupt_file_is_data_loss(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(LoadError) as info:
        saved_model.read_saved_model(tmp_path)
    assert info.value.code is Code.DATA_LOSS
    assert f"Can't parse {tmp_path / 'saved_model.pb'} as binary proto" in info.value.message


def test_tags_must_match_exactly() -> None:
    saved = saved_model.read_saved_model(HALF_PLUS_TWO)
    assert saved_model.select_meta_graph(saved, ["serve"], HALF_PLUS_TWO) is saved.meta_graphs[0]
    with pytest.raises(LoadError) as info:
        saved_model.select_meta_graph(saved, ["serve", "gpu"], HALF_PLUS_TWO)
    assert info.value.code is Code.NOT_FOUND
    assert "available tag sets: [['serve']]" in info.value.message


def test_modern_models_load_from_their_own_directory() -> None:
    saved = saved_model.read_saved_model(HALF_PLUS_TWO)
    with saved_model.loadable_directory(HALF_PLUS_TWO, saved) as directory:
        assert directory == HALF_PLUS_TWO


def test_tf_1_0_models_get_unknown_shapes_spelled_out() -> None:
    saved = saved_model.read_saved_model(HALF_PLUS_THREE)
    assert saved_model.is_legacy(saved.meta_graphs[0])
    with saved_model.loadable_directory(HALF_PLUS_THREE, saved) as directory:
        assert directory != HALF_PLUS_THREE
        assert (directory / "variables").resolve() == (HALF_PLUS_THREE / "variables").resolve()
        fixed = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes())
        graph = fixed.meta_graphs[0]
        placeholders = [n for n in graph.graph_def.node if n.op == "Placeholder"]
        assert placeholders and all(n.attr["shape"].shape.unknown_rank for n in placeholders)
        assert graph.signature_def["serving_default"].inputs["x"].tensor_shape.unknown_rank
    assert not directory.exists()
    # The stored SignatureDefs (what GetModelMetadata returns) are untouched.
    assert (
        not saved.meta_graphs[0]
        .signature_def["serving_default"]
        .inputs["x"]
        .HasField("tensor_shape")
    )
