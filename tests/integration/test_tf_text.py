"""A SavedModel that uses TF.Text's ops, served by a real `rollway serve`.

TF Serving links TF.Text's kernels into its binary, so such a model loads there;
rollway registers them (functions/serving/op_libraries.py) before a load. The
model, built here, case-folds sentences (``CaseFoldUTF8``), splits them into
words (``WhitespaceTokenizeWithOffsetsV2``) and maps the words to wordpiece ids
(``WordpieceTokenizeWithOffsets``) through a lookup table whose vocabulary file
is a SavedModel asset. gRPC Predict and REST :predict must answer exactly what
the same SavedModel computes in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as text
from tensorflow_serving.apis import prediction_service_pb2_grpc

from functions.serving.process import ServerProcess, free_port
from functions.trial_load import load_problem
from loader.versions import VersionId
from tests.conftest import REPO, ServerFactory
from tests.integration.helpers import predict_request

pytestmark = pytest.mark.integration

MODEL = "text"
RPC_TIMEOUT = 30.0
PAD = -1
# "[UNK]" is WordpieceTokenizer's default unknown token; it must be in the vocab.
VOCAB = ["[UNK]", "hello", "world", "##s", "un", "##aff", "##able", "über", "straße", "!"]
SENTENCES = ["Hello WORLDs", "UNAFFABLE über STRASSE", "Xyz !", ""]


def export_text_model(base: Path, version: int) -> Path:
    """serving_default: sentences string [None] -> folded string [None], ids int64 [None, None]
    (one row of wordpiece ids per sentence, padded with PAD)."""
    base.mkdir(parents=True, exist_ok=True)
    vocab_file = base.parent / f"{base.name}-vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")

    class TextModel(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.vocab = tf.saved_model.Asset(str(vocab_file))
            initializer = tf.lookup.TextFileInitializer(
                self.vocab,
                key_dtype=tf.string,
                key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
                value_dtype=tf.int64,
                value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            )
            self.table = tf.lookup.StaticVocabularyTable(initializer, num_oov_buckets=1)
            self.words = text.WhitespaceTokenizer()
            self.pieces = text.WordpieceTokenizer(self.table, token_out_type=tf.int64)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])  # type: ignore[misc]
        def serve(self, sentences: Any) -> dict[str, Any]:
            folded = text.case_fold_utf8(sentences)
            ids = self.pieces.tokenize(self.words.tokenize(folded))  # [batch, words, pieces]
            return {"folded": folded, "ids": ids.merge_dims(1, 2).to_tensor(default_value=PAD)}

    module = TextModel()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    vocab_file.unlink()  # the SavedModel must carry its own copy, in assets/
    return path


@pytest.fixture(scope="module")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models") / MODEL
    export_text_model(base, 1)
    return base


@pytest.fixture(scope="module")
def expected(model_base: Path) -> dict[str, np.ndarray]:
    """What the SavedModel computes in this process."""
    loaded = tf.saved_model.load(str(model_base / "1"))
    outputs = loaded.signatures["serving_default"](sentences=tf.constant(SENTENCES))
    return {name: value.numpy() for name, value in outputs.items()}


@pytest.fixture(scope="module")
def server(serve_module: ServerFactory, model_base: Path) -> tuple[ServerProcess, int]:
    rest_port = free_port()
    started = serve_module(
        [f"--model_name={MODEL}", f"--model_base_path={model_base}", f"--rest_api_port={rest_port}"]
    )
    return started, rest_port


@pytest.fixture(scope="module")
def stub(
    server: tuple[ServerProcess, int],
) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(server[0].address) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def rest_predict(port: int, body: Any) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=RPC_TIMEOUT) as reply:
        assert reply.status == 200
        return json.loads(reply.read())


def test_model_uses_tf_text_ops(model_base: Path, expected: dict[str, np.ndarray]) -> None:
    """Guards the test itself: the graph really holds TF.Text ops, and computes this."""
    graph = (model_base / "1" / "saved_model.pb").read_bytes()
    for op in (b"CaseFoldUTF8", b"WordpieceTokenizeWithOffsets"):
        assert op in graph
    assert expected["folded"].tolist() == [
        s.encode() for s in ["hello worlds", "unaffable über strasse", "xyz !", ""]
    ]
    assert expected["ids"].tolist() == [
        [1, 2, 3, PAD, PAD],
        [4, 5, 6, 7, 0],  # "strasse" is not "straße": [UNK]
        [0, 9, PAD, PAD, PAD],
        [PAD] * 5,
    ]


def test_grpc_predict(stub: Any, expected: dict[str, np.ndarray]) -> None:
    request = predict_request(MODEL)
    request.inputs["sentences"].CopyFrom(
        tf.make_tensor_proto(np.array(SENTENCES, dtype=object), dtype=tf.string)
    )
    response = stub.Predict(request, timeout=RPC_TIMEOUT)

    assert response.model_spec.version.value == 1
    assert sorted(response.outputs) == ["folded", "ids"]
    assert response.outputs["folded"].dtype == tf.string.as_datatype_enum
    assert response.outputs["ids"].dtype == tf.int64.as_datatype_enum
    for name, want in expected.items():
        got = tf.make_ndarray(response.outputs[name])
        assert got.shape == want.shape, name
        assert got.tolist() == want.tolist(), name


def test_rest_predict_columnar(server: tuple[ServerProcess, int], expected: Any) -> None:
    body = rest_predict(server[1], {"inputs": {"sentences": SENTENCES}})
    assert body == {
        "outputs": {
            "folded": [s.decode() for s in expected["folded"]],
            "ids": expected["ids"].tolist(),
        }
    }


def test_rest_predict_rows(server: tuple[ServerProcess, int], expected: Any) -> None:
    body = rest_predict(server[1], {"instances": SENTENCES})
    assert body == {
        "predictions": [
            {"folded": folded.decode(), "ids": ids.tolist()}
            for folded, ids in zip(expected["folded"], expected["ids"], strict=True)
        ]
    }


def test_trial_load_registers_tf_text(model_base: Path) -> None:
    """`rollway publish` and `rollway verify --load` load such a model too."""
    assert load_problem(model_base / "1", VersionId(MODEL, 1)) is None


def test_without_tf_text_the_load_fails_naming_the_op(model_base: Path) -> None:
    """No tensorflow_text: a warning, then TensorFlow's own error for the missing op."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tensorflow_text"] = None  # `import tensorflow_text` raises ImportError
        from pathlib import Path
        from functions.trial_load import load_problem
        from loader.versions import VersionId
        print("PROBLEM:", load_problem(Path({str(model_base / "1")!r}), VersionId("text", 1)))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    problem = done.stdout.split("PROBLEM:", 1)[1]
    assert "CaseFoldUTF8" in problem or "WordpieceTokenizeWithOffsets" in problem, problem
    assert "op library tensorflow_text is not registered" in done.stderr
