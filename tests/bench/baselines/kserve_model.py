"""KServe's ModelServer serving the SavedModel through a ``kserve.Model``.

Runs in the bench's KServe venv (never the main one), as a script:

- ``kserve_model.py serve --model_dir DIR --model_name M --http_port P --grpc_port Q``
  serves REST (v1 ``/v1/models/M:predict``) and gRPC (Open Inference Protocol v2
  ``inference.GRPCInferenceService/ModelInfer``). KServe binds every interface
  (``0.0.0.0`` and ``[::]``) and has no flag for the host, so both listeners are
  moved to 127.0.0.1 here, before ``ModelServer.start``.
- ``kserve_model.py probe --grpc_port Q --model_name M --request_out FILE`` writes
  the serialized ModelInferRequest the load generator sends, makes that call
  once with KServe's own generated stubs and prints the answer as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LOOPBACK = "127.0.0.1"


def bind_loopback() -> None:
    """Moves KServe's REST (uvicorn) and gRPC listeners from all interfaces to loopback."""
    import kserve.model_server
    import kserve.protocol.grpc.server as grpc_server
    from grpc import aio

    class LoopbackRESTServer(kserve.model_server.RESTServer):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = LOOPBACK  # the uvicorn server holds this same config

    def loopback_server(*args: Any, **kwargs: Any) -> Any:
        server = aio.server(*args, **kwargs)
        add_port = server.add_insecure_port
        server.add_insecure_port = lambda address: add_port(  # type: ignore[method-assign]
            address.replace("[::]", LOOPBACK)
        )
        return server

    kserve.model_server.RESTServer = LoopbackRESTServer
    grpc_server.aio = type("LoopbackAio", (), {"server": staticmethod(loopback_server)})


def serve(args: argparse.Namespace) -> None:
    import kserve
    import tensorflow as tf
    from kserve.utils.utils import get_predict_input, get_predict_response

    class SavedModel(kserve.Model):  # type: ignore[misc]
        """Predict calls the SavedModel's serving_default signature (one input, one output)."""

        def __init__(self, name: str, model_dir: str) -> None:
            super().__init__(name)
            self.model_dir = model_dir
            self.signature: Any = None
            self.input_name = ""
            self.load()

        def load(self) -> bool:
            self.signature = tf.saved_model.load(self.model_dir).signatures["serving_default"]
            self.input_name = next(iter(self.signature.structured_input_signature[1]))
            self.ready = True
            return True

        def predict(self, payload: Any, headers: Any = None) -> Any:
            x = tf.constant(get_predict_input(payload), dtype=tf.float32)
            outputs = self.signature(**{self.input_name: x})
            return get_predict_response(payload, next(iter(outputs.values())).numpy(), self.name)

    bind_loopback()
    # ModelServer reads its flags from sys.argv when kserve is imported.
    model = SavedModel(args.model_name, args.model_dir)
    kserve.ModelServer().start([model])


def probe(args: argparse.Namespace) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name=args.model_name)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    tensor.contents.fp32_contents.append(1.0)
    Path(args.request_out).write_bytes(request.SerializeToString())
    with grpc.insecure_channel(f"{LOOPBACK}:{args.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelInfer(request, timeout=30, wait_for_ready=True)
    outputs = {}
    for i, output in enumerate(reply.outputs):
        if i < len(reply.raw_output_contents):
            import numpy as np

            outputs[output.name] = np.frombuffer(reply.raw_output_contents[i], "<f4").tolist()
        else:
            outputs[output.name] = list(output.contents.fp32_contents)
    print(json.dumps({"outputs": outputs}))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "serve":
        parser.add_argument("command")
        parser.add_argument("--model_dir", required=True)
        parser.add_argument("--model_name", required=True)
        args, _ = parser.parse_known_args()  # the rest are KServe's ModelServer flags
        serve(args)
    elif command == "probe":
        parser.add_argument("command")
        parser.add_argument("--grpc_port", type=int, required=True)
        parser.add_argument("--model_name", required=True)
        parser.add_argument("--request_out", required=True)
        probe(parser.parse_args())
    else:
        parser.error("usage: kserve_model.py {serve,probe} ...")


if __name__ == "__main__":
    main()
