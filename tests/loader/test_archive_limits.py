"""The archive limits of `rollway loader` (--max-archive-bytes, --max-archive-members)
and of its Knative function (ROLLWAY_MAX_ARCHIVE_*): parsed once, and plumbed to
the unpacker. The integration cases run the pipeline the loader runs on a real
tar.gz of a real SavedModel, on local storage, and read the dead letter it emits."""

from __future__ import annotations

import hashlib
import tarfile
import uuid
from pathlib import Path

import pytest

from functions import loader_cmd
from functions.loader_function.function.func import settings_from
from loader import emit
from loader.decode import Archive, Published
from loader.errors import ConfigError
from loader.events import decode_data
from loader.pipeline import LoaderConfig, Outcome, Pipeline, Result
from loader.schemas.rollway.v1.events_pb2 import VersionRejected
from loader.unpack import DEFAULT_MAX_MEMBERS, DEFAULT_MAX_UNPACKED_BYTES
from tests.conftest import HALF_PLUS_TWO

REQUIRED = ["--bootstrap-servers", "127.0.0.1:9", "--store", "/srv/store"]


def loader_config(*flags: str) -> LoaderConfig:
    return loader_cmd.config_from(loader_cmd.parse([*REQUIRED, *flags]))[0]


def test_defaults_are_the_unpackers() -> None:
    config = loader_config()
    assert (config.max_unpacked_bytes, config.max_members) == (
        DEFAULT_MAX_UNPACKED_BYTES,
        DEFAULT_MAX_MEMBERS,
    )
    assert LoaderConfig("/srv/store").max_unpacked_bytes == DEFAULT_MAX_UNPACKED_BYTES
    assert LoaderConfig("/srv/store").max_members == DEFAULT_MAX_MEMBERS


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--max-archive-bytes", "1000"], (1000, DEFAULT_MAX_MEMBERS)),
        (["--max-archive-bytes", "2MiB"], (2 * 2**20, DEFAULT_MAX_MEMBERS)),
        (["--max-archive-bytes", "64gib"], (64 * 2**30, DEFAULT_MAX_MEMBERS)),
        (["--max-archive-bytes", "1 TiB"], (2**40, DEFAULT_MAX_MEMBERS)),
        (["--max-archive-members", "7"], (DEFAULT_MAX_UNPACKED_BYTES, 7)),
    ],
)
def test_flags_set_the_limits(flags: list[str], expected: tuple[int, int]) -> None:
    config = loader_config(*flags)
    assert (config.max_unpacked_bytes, config.max_members) == expected


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("max-archive-bytes", "0"),
        ("max-archive-bytes", "-5"),
        ("max-archive-bytes", "1.5GiB"),
        ("max-archive-bytes", "5GB"),
        ("max-archive-bytes", ""),
        ("max-archive-members", "0"),
        ("max-archive-members", "10k"),
        ("max-archive-members", "5MiB"),
    ],
)
def test_bad_values_name_the_flag(flag: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"--{flag} \\(or ROLLWAY_"):
        loader_config(f"--{flag}", value)


def test_the_environment_sets_them_for_the_command_and_the_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "ROLLWAY_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "ROLLWAY_STORE": "/srv/store",
        "ROLLWAY_MAX_ARCHIVE_BYTES": "3MiB",
        "ROLLWAY_MAX_ARCHIVE_MEMBERS": "9",
    }
    settings = settings_from(env)
    assert (settings.loader.max_unpacked_bytes, settings.loader.max_members) == (3 * 2**20, 9)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = loader_cmd.config_from(loader_cmd.parse([]))[0]
    assert (config.max_unpacked_bytes, config.max_members) == (3 * 2**20, 9)
    flag_wins = loader_config("--max-archive-members", "4")
    assert flag_wins.max_members == 4
    with pytest.raises(ConfigError, match="ROLLWAY_MAX_ARCHIVE_MEMBERS"):
        settings_from({**env, "ROLLWAY_MAX_ARCHIVE_MEMBERS": "many"})
    help_text = loader_cmd.build_parser().format_help()
    assert "--max-archive-bytes" in help_text and "--max-archive-members" in help_text


# -- a real archive through the loader's pipeline ---------------------------------------


def publish_archive(landing: Path, model: str, version: int) -> Published:
    """``<landing>/<model>/<version>.tar.gz`` of half_plus_two (6 members: 2
    directories, 4 files), then its ``.sha256`` LAST, as a trainer uploads it."""
    source = HALF_PLUS_TWO / "00000123"
    archive = landing / model / f"{version}.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=".")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    Path(f"{archive}.sha256").write_text(f"{digest}  {archive.name}\n")
    uri = str(archive)
    return Published(
        model, version, uri, None, f"test-{uuid.uuid4().hex}", "test-record",
        Archive(uri, f"{uri}.sha256", None, "tar.gz"),
    )  # fmt: skip


def members_of(archive: str) -> int:
    with tarfile.open(archive) as tar:
        return len(tar.getmembers())


def run_loader(tmp_path: Path, *flags: str) -> tuple[Result, Published]:
    landing, store = tmp_path / "landing", tmp_path / "store"
    event = publish_archive(landing, "hp", 1)
    args = loader_cmd.parse(
        ["--bootstrap-servers", "127.0.0.1:9", "--store", str(store),
         "--source-roots", str(landing), *flags]
    )  # fmt: skip
    return Pipeline(loader_cmd.config_from(args)[0]).handle(event), event


def dead_letter_reason(result: Result) -> str:
    topics = emit.Topics(dead_letter="dead")
    ((topic, record),) = emit.records_for(result, topics, "//rollway/tests")
    assert topic == "dead"
    return decode_data(record.value, VersionRejected()).reason


def test_an_archive_over_max_archive_members_is_dead_lettered(tmp_path: Path) -> None:
    result, event = run_loader(tmp_path, "--max-archive-members", "3")
    assert result.outcome is Outcome.REJECTED, result
    reason = dead_letter_reason(result)
    assert "at most 3 members" in reason and event.version_uri in reason
    assert not (tmp_path / "store" / "hp" / "1").exists()


def test_an_archive_over_max_archive_bytes_is_dead_lettered(tmp_path: Path) -> None:
    result, _ = run_loader(tmp_path, "--max-archive-bytes", "1KiB")
    assert result.outcome is Outcome.REJECTED, result
    assert "past the limit of 1024 bytes" in dead_letter_reason(result)


def test_an_archive_within_the_limits_is_staged(tmp_path: Path) -> None:
    count = members_of(publish_archive(tmp_path / "probe", "hp", 1).version_uri)
    result, _ = run_loader(tmp_path, "--max-archive-members", str(count))
    assert result.outcome is Outcome.STAGED, result.reason
    assert (tmp_path / "store" / "hp" / "1" / "saved_model.pb").is_file()
