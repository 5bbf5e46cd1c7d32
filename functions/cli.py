"""The ``rollway`` command: one subcommand per deployable."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with main(argv) -> int, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "functions.serving.server",
        "serve models over TF Serving's gRPC and REST APIs (drop-in for tensorflow_model_server)",
    ),
    "publish": (
        "functions.publish_cmd",
        "upload a SavedModel version (files first, manifest last) and announce it on Kafka",
    ),
    "verify": (
        "functions.verify_cmd",
        "prove a published model version complete (manifest, sizes, sha256, SavedModel)",
    ),
    "loader": (
        "functions.loader_cmd",
        "consume publish events: verify, stage and assign each version (Kafka consumer)",
    ),
    "models": (
        "functions.models_cmd",
        "list models, or show a model's assignment (versions, labels, pins, history)",
    ),
    "label": (
        "functions.models_cmd:label_main",
        "set or remove version labels (canary=N stable=M); makes a new generation",
    ),
    "pin": (
        "functions.models_cmd:pin_main",
        "serve exactly the given versions whatever the version policy says, or --clear",
    ),
    "rollback": (
        "functions.models_cmd:rollback_main",
        "go back to the previous generation's versions and labels, and pin them",
    ),
    "up": (
        "functions.up_cmd",
        "run S3 or HDFS, Kafka, the loader and a serving replica locally (127.0.0.1) until Ctrl-C",
    ),
    "rollout": (
        "functions.rollout_cmd",
        "Knative revisions per generation: status, promote, rollback, run (the consumer)",
    ),
}


def usage() -> str:
    lines = ["usage: rollway COMMAND [FLAGS]", "", "commands:"]
    lines += [f"  {name:<10}{summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run 'rollway COMMAND --help' for a command's flags."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"rollway: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # "package.module" runs its main(); "package.module:function" names another entry point.
    module_name, _, function = command[0].partition(":")
    module = importlib.import_module(module_name)
    result: int = getattr(module, function or "main")(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
