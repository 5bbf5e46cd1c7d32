"""What a user writes instead: grpcio's synchronous server and TensorFlow, ~30 lines.

Run: ``python -m tests.bench.baselines.naive_server --port P --model DIR``
(DIR: one SavedModel version). Predict calls the ``serving_default`` signature.
"""

from __future__ import annotations

import argparse
from concurrent import futures
from typing import Any

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class Predictor(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, model_dir: str) -> None:
        self.signature = tf.saved_model.load(model_dir).signatures["serving_default"]

    def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 (the proto's name)
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for name, value in self.signature(**inputs).items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="a SavedModel version directory")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.threads))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        Predictor(args.model), server
    )
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"naive server on 127.0.0.1:{args.port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
