"""The Containerfiles, checked for structure (no container engine runs here)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.validation import INFRA, REPO

IMAGES = INFRA / "images"
SOURCE_DIRS = ("loader", "functions", "protos")
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL", re.IGNORECASE)
SECRET_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|(?:password|secret)\s*=\s*\S",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str
    line: int


def parse(path: Path) -> list[Instruction]:
    """Instructions of a Containerfile: comments dropped, continuations joined."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, argument = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), argument.strip(), start))
        pending = []
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def _of(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def _index(instructions: list[Instruction], predicate: str) -> int:
    for position, instruction in enumerate(instructions):
        if re.search(predicate, f"{instruction.keyword} {instruction.argument}"):
            return position
    raise AssertionError(f"no instruction matches {predicate!r}")


CONTAINERFILES = sorted(IMAGES.glob("*.Containerfile"))


def test_both_images_exist() -> None:
    assert {p.name for p in CONTAINERFILES} == {"serving.Containerfile", "loader.Containerfile"}


@pytest.fixture(params=CONTAINERFILES, ids=lambda p: p.name)
def containerfile(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_known_instructions_only(containerfile: Path) -> None:
    known = {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD"}
    assert {i.keyword for i in parse(containerfile)} <= known


def test_from_a_small_pinned_python_base(containerfile: Path) -> None:
    instructions = parse(containerfile)
    assert instructions[0].keyword in ("FROM", "ARG")
    (base,) = _of(instructions, "FROM")
    image = base.argument.split()[0]
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", image), image


def test_runs_as_a_numeric_non_root_user(containerfile: Path) -> None:
    instructions = parse(containerfile)
    users = _of(instructions, "USER")
    assert users, "no USER: the image would run as root"
    final = users[-1].argument
    uid = final.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, final  # numeric, so runAsNonRoot can verify it
    # Nothing runs after switching user that would need root, and the user is
    # set after the last RUN (installs happen as root, the process does not).
    assert instructions.index(users[-1]) > max(
        instructions.index(i) for i in _of(instructions, "RUN")
    )
    assert uid == "10001", "the manifests' runAsUser is 10001"


def test_no_secrets_baked_in(containerfile: Path) -> None:
    for instruction in parse(containerfile):
        if instruction.keyword in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", instruction.argument) or [instruction.argument.split()[0]]
            for name in names:
                assert not SECRET_NAME.search(name), f"line {instruction.line}: {name}"
        assert not SECRET_VALUE.search(instruction.argument), f"line {instruction.line}"
        if instruction.keyword == "COPY":
            assert not re.search(r"\.env\b|\.aws|kubeconfig|id_rsa", instruction.argument)


def test_dependencies_install_before_the_source_is_copied(containerfile: Path) -> None:
    instructions = parse(containerfile)
    install_deps = _index(instructions, r"RUN .*pip install -r ")
    for directory in SOURCE_DIRS:
        copy = _index(instructions, rf"COPY {directory}\b")
        assert install_deps < copy, directory
    assert _index(instructions, r"COPY pyproject\.toml") < install_deps
    # The project itself goes in last, without re-resolving dependencies.
    assert _index(instructions, r"RUN pip install --no-deps \.") > install_deps


def test_tensorflow_serving_api_goes_in_without_deps_as_the_makefile(
    containerfile: Path,
) -> None:
    makefile = (REPO / "Makefile").read_text()
    pinned = re.search(r"^TF_SERVING_API := (\S+)", makefile, re.MULTILINE)
    assert pinned
    instructions = parse(containerfile)
    args = {
        i.argument.partition("=")[0]: i.argument.partition("=")[2] for i in _of(instructions, "ARG")
    }
    assert args["TF_SERVING_API"] == pinned.group(1)
    assert re.search(
        r'pip install --no-deps "\$TF_SERVING_API"',
        instructions[_index(instructions, "RUN .*-r")].argument,
    )


def test_exec_form_entrypoint(containerfile: Path) -> None:
    instructions = parse(containerfile)
    commands = _of(instructions, "ENTRYPOINT") + _of(instructions, "CMD")
    assert commands
    for command in commands:
        assert isinstance(json.loads(command.argument), list)  # signals reach the process


def test_serving_image() -> None:
    instructions = parse(IMAGES / "serving.Containerfile")
    assert json.loads(_of(instructions, "ENTRYPOINT")[0].argument) == ["rollway", "serve"]
    (expose,) = _of(instructions, "EXPOSE")
    assert expose.argument.split() == ["8500", "8501"]
    # tensorflow-cpu comes from pyproject.toml's dependencies.
    assert "tensorflow-cpu" in (REPO / "pyproject.toml").read_text()
    assert "project']['dependencies']" in instructions[_index(instructions, "RUN .*-r")].argument


def test_loader_image_has_no_tensorflow() -> None:
    instructions = parse(IMAGES / "loader.Containerfile")
    (cmd,) = _of(instructions, "CMD")
    assert json.loads(cmd.argument) == ["python", "-m", "functions.loader_function"]
    (expose,) = _of(instructions, "EXPOSE")
    assert expose.argument.split() == ["8080"]
    install = instructions[_index(instructions, "RUN .*-r")].argument
    assert "'tensorflow-cpu'" in install  # in the skip set
    for instruction in _of(instructions, "RUN"):
        # Only the --no-deps API package; never TensorFlow itself.
        without_api = instruction.argument.replace("tensorflow-serving-api", "")
        assert not re.search(r"pip install[^&]*\btensorflow\b", without_api)


def _loader_requirements() -> set[str]:
    """The names the loader image installs: its own filter run on pyproject.toml, here."""
    instructions = parse(IMAGES / "loader.Containerfile")
    install = instructions[_index(instructions, "RUN .*-r")].argument
    match = re.search(r'python -c "(.*?)" >', install)
    assert match
    code = (
        match.group(1).replace("\\\\", "\\").replace("pyproject.toml", str(REPO / "pyproject.toml"))
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "loader.Containerfile", "exec"), {})
    lines = [*out.getvalue().splitlines(), *re.findall(r'echo "([^"]+)" >>', install)]
    return {_name(line) for line in lines}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement)[0].lower()


def test_loader_dependency_filter_drops_tensorflow() -> None:
    names = _loader_requirements()
    assert names and not {n for n in names if n.startswith("tensorflow")}
    assert {"boto3", "kafka-python", "cloudevents", "protobuf", "func-python"} <= names


def test_loader_image_has_what_the_rollout_function_needs() -> None:
    """The same image runs functions.rollout_function (infra/base/rollout.yaml):
    the project's "rollout" extra, and every dependency of the function project
    (whose list tests/rollout checks against the function's imports)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as the image's own filter
    names = _loader_requirements()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert {_name(d) for d in project["optional-dependencies"]["rollout"]} <= names
    assert {"kubernetes", "pyyaml"} <= names
    function = REPO / "functions" / "rollout_function" / "pyproject.toml"
    needed = {_name(d) for d in tomllib.loads(function.read_text())["project"]["dependencies"]}
    assert needed <= names, needed - names


@pytest.mark.parametrize("name", ["serving", "loader"])
def test_build_context_is_filtered(name: str) -> None:
    ignore = (IMAGES / f"{name}.Containerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything out (.venv, .git, caches), then the sources back in
    assert {f"!{d}" for d in SOURCE_DIRS} <= set(ignore)
