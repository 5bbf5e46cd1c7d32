"""``make demo``: export a small SavedModel, serve it with ``rollway serve``, make
one Predict call through the TensorFlow Serving API, print it, and stop.

The embedded default is a two-feature linear model, y = 3*x0 - 2*x1 + 0.5.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WEIGHTS = ((3.0,), (-2.0,))
BIAS = 0.5


def export_demo_model(base: Path, version: int = 1) -> Path:
    """Writes the demo SavedModel to ``base/<version>`` and returns that path."""
    import tensorflow as tf

    class Linear(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(WEIGHTS, dtype=tf.float32)
            self.b = tf.Variable(BIAS, dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])  # type: ignore[untyped-decorator]
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.matmul(x, self.w) + self.b}

    model = Linear()
    path = base / str(version)
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})
    return path


def main() -> int:
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from functions.serving.process import ServerProcess

    with tempfile.TemporaryDirectory(prefix="rollway-demo-") as tmp:
        base = Path(tmp) / "models" / "demo"
        print(f"1. exporting the demo SavedModel to {export_demo_model(base)}")
        server = ServerProcess(
            ["--model_name=demo", f"--model_base_path={base}", "--file_system_poll_wait_seconds=0"],
            Path(tmp) / "server.log",
        )
        print(f"2. starting: rollway serve --port={server.port} --model_name=demo ...")
        started = time.monotonic()
        with server:
            server.wait_serving()
            print(f"   SERVING after {time.monotonic() - started:.1f}s (gRPC health check)")
            x = np.array([[1.0, 2.0], [0.5, -1.0]], dtype=np.float32)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "demo"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
            with grpc.insecure_channel(server.address) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                response = stub.Predict(request, timeout=10)
            y = tf.make_ndarray(response.outputs["y"])
            print("3. Predict through tensorflow_serving.apis.PredictionService:")
            print(f"   model_spec: name={response.model_spec.name} "
                  f"version={response.model_spec.version.value} "
                  f"signature={response.model_spec.signature_name}")  # fmt: skip
            for row, value in zip(x.tolist(), y.reshape(-1).tolist(), strict=True):
                print(f"   x={row} -> y={value:g}")
            expected = x @ np.array(WEIGHTS, dtype=np.float32) + BIAS
            if not np.allclose(y, expected):
                print(f"demo FAILED: expected {expected.reshape(-1).tolist()}", file=sys.stderr)
                return 1
        code = server.proc.returncode if server.proc else None
        print(f"4. stopped the server cleanly (exit code {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
