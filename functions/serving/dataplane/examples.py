"""Classify, Regress and MultiInference on one servable: TF Serving's
tf.Example APIs.

The request's ``Input`` becomes one DT_STRING array of serialized
tf.Examples (``codecs.examples``), fed to the signature's single input. The
signature's outputs are then read as TF Serving reads them: ``classes``/
``scores`` for classification, ``outputs`` for regression, with TF Serving's
checks and messages. Results are protocol-neutral (:class:`Classification`,
:class:`Regression`); each adapter renders them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from functions.serving.codecs.examples import serialized_examples
from functions.serving.dataplane.types import (
    Class,
    Classification,
    Regression,
    Served,
    Task,
)
from functions.serving.runtime.servable import Servable, Signature
from loader.errors import InvalidArgument

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
CLASSES, SCORES, OUTPUTS = "classes", "scores", "outputs"
_Result = TypeVar("_Result", Classification, Regression)


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
) -> Classification:
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
    return tuple(
        tuple(
            Class(
                _text(classes[row, column]) if classes is not None else "",
                float(np.float32(scores[row, column])) if scores is not None else 0.0,
            )
            for column in range(width)
        )
        for row in range(batch)
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _regress(servable: Servable, signature: Signature, examples: npt.NDArray[Any]) -> Regression:
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
    # TF Serving's Regression.value is a float: keep its precision.
    return tuple(float(value) for value in values.reshape(-1).astype(np.float32))


def _on_signature(
    servable: Servable,
    signature_name: str,
    method: str,
    run: Callable[[Servable, Signature, npt.NDArray[Any]], _Result],
    request_input: Any,
    check_method: bool,
) -> tuple[Served, _Result]:
    """Classify or Regress (``run``) with the named signature, looked up (and with
    ``check_method``, its method checked) before the request's examples are read."""
    signature = _signature(servable, signature_name, method, check_method)
    result = run(servable, signature, serialized_examples(request_input))
    return Served(servable.version_id, signature.name), result


def classify_with(
    servable: Servable, signature_name: str, request_input: Any, check_method: bool = False
) -> tuple[Served, Classification]:
    return _on_signature(
        servable, signature_name, CLASSIFY_METHOD, _classify, request_input, check_method
    )


def regress_with(
    servable: Servable, signature_name: str, request_input: Any, check_method: bool = False
) -> tuple[Served, Regression]:
    return _on_signature(
        servable, signature_name, REGRESS_METHOD, _regress, request_input, check_method
    )


def check_tasks(tasks: Sequence[Task]) -> None:
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


def multi_inference_with(
    servable: Servable,
    tasks: Sequence[Task],
    request_input: Any,
    check_method: bool = False,
) -> list[tuple[Served, Classification | Regression]]:
    """Runs every task on the same examples; results in task order."""
    check_tasks(tasks)
    examples = serialized_examples(request_input)
    results: list[tuple[Served, Classification | Regression]] = []
    for task in tasks:
        name = task.selector.signature_name
        signature = _signature(servable, name, task.method_name, check_method)
        result: Classification | Regression = (
            _classify(servable, signature, examples)
            if task.method_name == CLASSIFY_METHOD
            else _regress(servable, signature, examples)
        )
        results.append((Served(servable.version_id, signature.name), result))
    return results
