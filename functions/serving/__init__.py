"""``rollway serve``: a TensorFlow Serving-compatible model server, in layers
whose imports point down only (import-linter contracts in pyproject.toml,
checked by ``make test``):

    server.py    wiring only: flags -> sources -> manager -> data plane -> APIs
    workers/     --workers N: the supervisor (runs the sources, loads nothing)
                 and each worker's link to it; no TensorFlow, no transport
    api/         thin protocol adapters over the same data plane: tfserving/
                 (TF Serving's gRPC and REST) and v2/ (the Open Inference
                 Protocol's gRPC and REST, its model repository extension);
                 what both REST apps share (rest_calls: pool, backlog, bodies);
                 health, the profiler, the error maps (grpc_errors, http_errors);
                 the transports: grpc_server (grpc.aio), http_server (uvicorn)
    dataplane/   one DataPlane (predict, classify, regress, multi_inference,
                 metadata, status, ready) with protocol-neutral types; warmup
    runtime/     TensorFlow: SavedModel reading, the Session runner, TFLite,
                 the servable, batching, op libraries
    codecs/      TensorProto <-> numpy, TF Serving's JSON, tf.Example inputs;
                 no transport
    core/        sources (file system, assignments), the manager; no TensorFlow
    metrics.py   the metrics registry the server creates and hands down
"""
