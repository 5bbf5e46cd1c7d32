# The two commands a new user runs are `make demo` and `make test`. Each one
# builds .venv from nothing when it is missing or out of date.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rollway-installed
# Must match the TensorFlow minor version pinned in pyproject.toml.
TF_SERVING_API := tensorflow-serving-api==2.21.0
# TF.Text's kernels, which TF Serving links into its binary. 2.21.1, not 2.21.0:
# the 2.21.0 wheel fails to import (undefined symbol icudt77_dat in its ICU data).
# TF Decision Forests has no build for TensorFlow 2.21 (1.12.0 requires 2.19.0).
TF_TEXT := tensorflow-text==2.21.1

.PHONY: venv demo test lint typecheck layers unit bench protos clean

venv: $(STAMP)

# tensorflow-serving-api and tensorflow-text go in with --no-deps: their metadata
# asks for the full `tensorflow` wheel, which would sit beside tensorflow-cpu.
# Their real needs (grpcio, protobuf; numpy) are in pyproject.toml.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps '$(TF_SERVING_API)' '$(TF_TEXT)'
	touch $(STAMP)

# Regenerates loader/schemas/ from protos/rollway/v1/*.proto, and the Open
# Inference Protocol's messages (protos/inference, from Triton's definition)
# into the v2 API. The generated modules are committed; tests/unit/test_schemas.py
# fails when they are stale. The v2 messages are built in a descriptor pool of
# their own (the sed): tritonclient, KServe and MLServer register the same
# `inference.*` names in protobuf's default pool, and one process may hold
# rollway's server and one of those clients.
PROTO_OUT := loader/schemas
V2_PROTO_OUT := functions/serving/api/v2/proto
protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) protos/rollway/v1/*.proto
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(V2_PROTO_OUT) --pyi_out=$(V2_PROTO_OUT) protos/inference/*.proto
	sed -i 's/_descriptor_pool\.Default()/_descriptor_pool.DescriptorPool()/' $(V2_PROTO_OUT)/inference/*_pb2.py

# make demo DEMO_STORAGE=hdfs runs it on HDFS; unset, ROLLWAY_DEMO_STORAGE or s3 applies.
demo: $(STAMP)
	$(PY) -m functions.demo $(if $(DEMO_STORAGE),--storage '$(DEMO_STORAGE)')

lint: $(STAMP)
	$(VENV)/bin/ruff check loader functions tests
	$(VENV)/bin/ruff format --check loader functions tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The layering contracts of pyproject.toml's [tool.importlinter].
layers: $(STAMP)
	$(VENV)/bin/lint-imports

test: lint typecheck layers
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) -m tests.bench.bench_predict
	$(PY) -m tests.bench.bench_batching
	$(PY) -m tests.bench.bench_storage
	$(PY) -m tests.bench.bench_loader
	$(PY) -m tests.bench.bench_serving_assigned
	$(PY) -m tests.bench.bench_serving_compare
	$(PY) -m tests.bench.bench_soak

clean:
	rm -rf $(VENV) tests/bench/results/*.tmp .mypy_cache .ruff_cache .pytest_cache
