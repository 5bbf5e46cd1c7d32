"""The committed generated modules are exactly what protoc makes of protos/:
loader/schemas from rollway/v1, and the v2 API's from inference/ (built in a
descriptor pool of their own, as the Makefile's ``protos`` target writes them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
GENERATED = ROOT / "loader" / "schemas"
V2_GENERATED = ROOT / "functions" / "serving" / "api" / "v2" / "proto"
# The Makefile's sed over the v2 modules: their own pool, not protobuf's default.
DEFAULT_POOL = "_descriptor_pool.Default()"
OWN_POOL = "_descriptor_pool.DescriptorPool()"


def proto_files() -> list[Path]:
    return sorted((PROTOS / "rollway" / "v1").glob("*.proto")) + sorted(
        (PROTOS / "inference").glob("*.proto")
    )


def generated_dir(proto: Path) -> Path:
    return V2_GENERATED if proto.parent.name == "inference" else GENERATED


def test_there_are_schemas() -> None:
    assert {p.name for p in proto_files()} >= {
        "manifest.proto", "events.proto", "assignment.proto", "grpc_service.proto"
    }  # fmt: skip


@pytest.mark.parametrize("proto", proto_files(), ids=lambda p: p.name)
def test_generated_modules_are_current(proto: Path, tmp_path: Path) -> None:
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    # In a subprocess: protoc in-process segfaults once TensorFlow's protobuf
    # descriptors are loaded into the test process by other tests.
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", str(proto)],
        check=True, timeout=60,
    )  # fmt: skip
    rel = proto.relative_to(PROTOS).with_suffix("")
    for suffix in ("_pb2.py", "_pb2.pyi"):
        fresh = (tmp_path / f"{rel}{suffix}").read_text()
        if generated_dir(proto) is V2_GENERATED and suffix == "_pb2.py":
            assert fresh.count(DEFAULT_POOL) == 1
            fresh = fresh.replace(DEFAULT_POOL, OWN_POOL)
        committed = (generated_dir(proto) / f"{rel}{suffix}").read_text()
        assert committed == fresh, f"{rel}{suffix} is stale: run `make protos`"
