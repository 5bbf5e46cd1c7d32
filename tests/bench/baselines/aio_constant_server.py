"""The Python transport limit: a ``grpc.aio`` PredictionService whose Predict
parses the request and answers one pre-built PredictResponse, without TensorFlow.

Run: ``python -m tests.bench.baselines.aio_constant_server --port P --response FILE``,
where FILE holds a serialized ``tensorflow.serving.PredictResponse`` (the
benchmark writes it). The process imports grpc and protobuf only: the TF
Serving protos would import all of TensorFlow, so the method is registered by
name and the request is checked as a protobuf message of unknown type.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2

SERVICE = "tensorflow.serving.PredictionService"


def handler(response: bytes) -> grpc.GenericRpcHandler[Any, Any]:
    """Predict: parse the request (every field as unknown), answer ``response``."""

    async def predict(
        request: empty_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        return response

    method = grpc.unary_unary_rpc_method_handler(
        predict,
        request_deserializer=empty_pb2.Empty.FromString,
        response_serializer=None,  # already bytes
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"Predict": method})


async def serve(port: int, response: bytes) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler(response),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"aio constant server on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response", type=Path, required=True, help="serialized PredictResponse")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.response.read_bytes()))


if __name__ == "__main__":
    main()
