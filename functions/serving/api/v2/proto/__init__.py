"""Python modules generated from ``protos/inference`` by ``make protos``.

Do not edit: regenerate. ``tests/unit/test_schemas.py`` fails when these are
stale. Import them as
``from functions.serving.api.v2.proto.inference import grpc_service_pb2``.
"""
