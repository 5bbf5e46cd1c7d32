"""The Open Inference Protocol (v2, KServe's and Triton's) beside TF Serving's
API, over the same data plane: ``inference`` (protocol-neutral requests,
responses and :class:`~functions.serving.api.v2.inference.V2Api`), and its
adapters ``rest_api`` + ``rest_codec`` (``/v2`` on the REST port) and
``grpc_api`` + ``grpc_codec`` (``inference.GRPCInferenceService`` on the gRPC
port, messages from ``proto/``, compiled from Triton's definition: see
protos/inference); ``repository`` holds the model repository extension's
behaviour per feed."""
