"""functions/serving/saved_model.py on real SavedModel files."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.serving.runtime import saved_model
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
