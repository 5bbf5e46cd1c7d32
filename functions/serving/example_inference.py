"""Classify, Regress and MultiInference: TF Serving's tf.Example APIs.

The request's ``Input`` (``example_list``, or ``example_list_with_context``
where each example is merged over the context exactly as TF Serving does, by
concatenating the serialized protos) becomes one DT_STRING tensor of
serialized tf.Examples, fed to the signature's single input. The signature's
outputs are then read as TF Serving reads them: ``classes``/``scores`` for
classification, ``outputs`` for regression.

Results are TF Serving's result protos, built once here for every transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tensorflow_serving.apis import classification_pb2, regression_pb2

from functions.serving.inference import ModelSelector
from functions.serving.manager import Manager
from functions.serving.servable import Servable, Signature
from loader.errors import InvalidArgument
from loader.versions import VersionId

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
CLASSES, SCORES, OUTPUTS = "classes", "scores", "outputs"


@dataclass(frozen=True)
class Served:
    """Which version and signature produced a result (for the response's model_spec)."""

    version_id: VersionId
    signature_name: str


def serialized_examples(request_input: Any) -> npt.NDArray[Any]:
    """The Input as a [num_examples] DT_STRING array of serialized tf.Examples."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        # Concatenated protos merge: an example's features override the context's.
        examples = [context + e.SerializeToString() for e in listed.examples]
    else:
        raise InvalidArgument("Input is empty.")
    if not examples:
        raise InvalidArgument("Input is empty.")
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return array


def _input_name(signature: Signature) -> str:
    """The signature's one input, which receives the serialized examples."""
    if len(signature.inputs) != 1:
        raise InvalidArgument(
            f"Expected one input Tensor in signature {signature.name!r}, found "
            f"{len(signature.inputs)}."
        )
    (name,) = signature.inputs
    return name


def _signature(servable: Servable, name: str, method: str, check_method: bool) -> Signature:
    signature = servable.signature(name)
    if check_method and signature.method_name != method:
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        raise InvalidArgument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )
    return signature


def _classify(
    servable: Servable, signature: Signature, examples: npt.NDArray[Any]
) -> classification_pb2.ClassificationResult:
    input_name = _input_name(signature)
    wanted = [k for k in (CLASSES, SCORES) if k in signature.outputs]
    if not wanted:
        raise InvalidArgument(
            f'Signature {signature.name!r} has neither a "classes" nor a "scores" output, '
            "so it cannot classify"
        )
    outputs = servable.run(signature, {input_name: examples}, wanted, api="Classify")
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    batch = len(examples)
    for name, tensor in ((CLASSES, classes), (SCORES, scores)):
        if tensor is not None and (tensor.ndim != 2 or tensor.shape[0] != batch):
            raise InvalidArgument(
                f"Expected {name} Tensor shape: [batch_size num_classes] with batch_size "
                f"{batch} but got {list(tensor.shape)}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
            f"{scores.shape[1]}"
        )
    width = (scores if scores is not None else classes).shape[1]  # type: ignore[union-attr]
    result = classification_pb2.ClassificationResult()
    for row in range(batch):
        classifications = result.classifications.add()
        for column in range(width):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = _text(classes[row, column])
            if scores is not None:
                entry.score = float(scores[row, column])
    return result


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _regress(
    servable: Servable, signature: Signature, examples: npt.NDArray[Any]
) -> regression_pb2.RegressionResult:
    input_name = _input_name(signature)
    if OUTPUTS not in signature.outputs:
        raise InvalidArgument(f'Signature {signature.name!r} has no "outputs" output to regress')
    values = servable.run(signature, {input_name: examples}, [OUTPUTS], api="Regress")[OUTPUTS]
    batch = len(examples)
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidArgument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{list(values.shape)}"
        )
    if values.shape[0] != batch:
        raise InvalidArgument(
            f"Input batch size did not match output batch size: {batch} vs. {values.shape[0]}"
        )
    result = regression_pb2.RegressionResult()
    for value in values.reshape(-1):
        result.regressions.add().value = float(value)
    return result


def classify(
    manager: Manager, selector: ModelSelector, request_input: Any, check_method: bool = False
) -> tuple[Served, classification_pb2.ClassificationResult]:
    servable = manager.resolve(selector.name, selector.version, selector.label)
    return classify_with(servable, selector.signature_name, request_input, check_method)


def classify_with(
    servable: Servable, signature_name: str, request_input: Any, check_method: bool = False
) -> tuple[Served, classification_pb2.ClassificationResult]:
    signature = _signature(servable, signature_name, CLASSIFY_METHOD, check_method)
    result = _classify(servable, signature, serialized_examples(request_input))
    return Served(servable.version_id, signature.name), result


def regress(
    manager: Manager, selector: ModelSelector, request_input: Any, check_method: bool = False
) -> tuple[Served, regression_pb2.RegressionResult]:
    servable = manager.resolve(selector.name, selector.version, selector.label)
    return regress_with(servable, selector.signature_name, request_input, check_method)


def regress_with(
    servable: Servable, signature_name: str, request_input: Any, check_method: bool = False
) -> tuple[Served, regression_pb2.RegressionResult]:
    signature = _signature(servable, signature_name, REGRESS_METHOD, check_method)
    result = _regress(servable, signature, serialized_examples(request_input))
    return Served(servable.version_id, signature.name), result


@dataclass(frozen=True)
class Task:
    """One MultiInference task: a signature and the method to apply with it."""

    selector: ModelSelector
    method_name: str


def _check_tasks(tasks: Sequence[Task]) -> None:
    """TF Serving's rules for a MultiInferenceRequest's tasks."""
    if not tasks:
        raise InvalidArgument("MultiInferenceRequest must contain at least one task")
    seen: set[str] = set()
    for task in tasks:
        if task.selector.name != tasks[0].selector.name:
            raise InvalidArgument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        if task.selector.signature_name in seen:
            raise InvalidArgument(
                f"Duplicate evaluation of signature: {task.selector.signature_name}"
            )
        seen.add(task.selector.signature_name)
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise InvalidArgument(f"Unsupported signature method_name: {task.method_name}")


def multi_inference(
    manager: Manager, tasks: Sequence[Task], request_input: Any, check_method: bool = False
) -> list[tuple[Served, Any]]:
    """Runs every task on the same examples; results in task order."""
    _check_tasks(tasks)
    first = tasks[0].selector
    servable = manager.resolve(first.name, first.version, first.label)
    return multi_inference_with(servable, tasks, request_input, check_method)


def multi_inference_with(
    servable: Servable, tasks: Sequence[Task], request_input: Any, check_method: bool = False
) -> list[tuple[Served, Any]]:
    _check_tasks(tasks)
    examples = serialized_examples(request_input)
    results: list[tuple[Served, Any]] = []
    for task in tasks:
        name = task.selector.signature_name
        signature = _signature(servable, name, task.method_name, check_method)
        run = _classify if task.method_name == CLASSIFY_METHOD else _regress
        result = run(servable, signature, examples)
        results.append((Served(servable.version_id, signature.name), result))
    return results
