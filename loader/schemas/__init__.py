"""Python modules generated from ``protos/rollway/v1`` by ``make protos``.

Do not edit: regenerate. ``tests/unit/test_schemas.py`` fails when these are
stale. Import them as ``from loader.schemas.rollway.v1 import manifest_pb2``.
"""
