"""The rollout against a real cluster: only when KUBECONFIG is set.

What the fake API of the other tests cannot show is checked here: that the API
server answers a stale resourceVersion in a merge patch with 409 (and apply
retries), that Knative's admission webhook accepts every Service shape the
plans produce (server-side dry runs, nothing kept), and that Knative's status
reports a failed revision the way ``revision_readiness`` reads it.

Needs Knative Serving (with ``kubernetes.podspec-volumes-emptydir``, as
infra/ does) and a namespace, ``ROLLWAY_TEST_NAMESPACE`` (default: default),
where the kubeconfig's user may get, create, patch and delete
services.serving.knative.dev. Services made here are named
``rollway-test-<random>`` and deleted afterwards. With
``ROLLWAY_TEST_ROLLOUT_IMAGE`` (any image that answers HTTP on ``$PORT``, e.g.
Knative's helloworld-go), a canary is also promoted and rolled back on
revisions that really become Ready.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from functions.rollout import apply, plan
from functions.rollout.handler import roll_out
from functions.rollout.service import (
    Readiness,
    Service,
    Strategy,
    revision_readiness,
    service_from_template,
)
from functions.rollout.settings import RolloutConfig
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from tests.rollout.helpers import served
from tests.rollout.test_plan import SCENARIOS, run

pytestmark = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="KUBECONFIG is not set: no cluster to roll out on",
)

NAMESPACE = os.environ.get("ROLLWAY_TEST_NAMESPACE", "default")
IMAGE = os.environ.get("ROLLWAY_TEST_ROLLOUT_IMAGE", "")
# Knative fails a revision at once when it cannot resolve the image's digest.
UNPULLABLE = "registry.invalid/rollway/none:0"
READY_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def api() -> apply.ServicesApi:
    from kubernetes import client  # type: ignore[import-untyped, unused-ignore]

    services = apply.load_api()
    try:
        client.ApiextensionsV1Api().read_custom_resource_definition("services.serving.knative.dev")
    except client.exceptions.ApiException as err:
        pytest.skip(f"Knative Serving is not installed: {err.reason}")
    return services


@pytest.fixture
def name(api: Any) -> Iterator[str]:
    made = f"rollway-test-{uuid.uuid4().hex[:8]}"
    yield made
    try:
        api.delete_namespaced_custom_object(
            apply.GROUP, apply.VERSION, NAMESPACE, apply.PLURAL, made
        )
    except Exception as err:
        if apply.status_of(err) != 404:
            raise


def minimal_template(image: str) -> Service:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "template"},
        "spec": {"template": {"spec": {"containers": [{
            "image": image,
            "env": [{"name": "ROLLWAY_PIN_GENERATION", "value": ""},
                    {"name": "ROLLWAY_MODELS", "value": "x"}],
        }]}}},
    }  # fmt: skip


def wait_for(api: Any, name: str, done: Callable[[Service], bool], what: str) -> Service:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        service = apply.get(api, NAMESPACE, name)
        if service is not None and done(service):
            return service
        if time.monotonic() > deadline:
            pytest.fail(f"Service {name}: {what} not seen in {READY_TIMEOUT} s: {service}")
        time.sleep(2)  # polling the status: Knative offers no readiness signal to wait on


def test_every_planned_shape_passes_knatives_admission(api: Any, name: str) -> None:
    """Server-side dry runs of each Service the plan scenarios produce."""
    for scenario in SCENARIOS:
        service = scenario.start()
        service["metadata"]["annotations"].update(scenario.annotations)
        for step in scenario.steps:
            service["metadata"]["annotations"].update(step.annotations)
            service = run(step, served(service, ready=step.ready, failed=step.failed))
            renamed: Service = json.loads(json.dumps(service).replace('"mnist-', f'"{name}-'))
            renamed["metadata"]["name"] = name
            renamed["metadata"].pop("resourceVersion", None)
            renamed["metadata"]["namespace"] = NAMESPACE
            api.create_namespaced_custom_object(
                apply.GROUP, apply.VERSION, NAMESPACE, apply.PLURAL, renamed, dry_run="All"
            )


def test_a_stale_patch_is_a_conflict_and_apply_retries(api: Any, name: str) -> None:
    template = minimal_template(IMAGE or UNPULLABLE)
    config = RolloutConfig(NAMESPACE, {"x": (name,)}, create=True, template=template)
    (created,) = roll_out(api, config, AssignmentChanged(model="x", generation=1))
    assert created.outcome == "created"

    class Interfering:
        """Another writer annotates the Service between apply's get and patch."""

        def __init__(self) -> None:
            self.patches = 0

        def __getattr__(self, attr: str) -> Any:
            return getattr(api, attr)

        def patch_namespaced_custom_object(self, *args: Any, **kw: Any) -> Any:
            self.patches += 1
            if self.patches == 1:
                body = {"metadata": {"annotations": {"example.com/touched": "yes"}}}
                api.patch_namespaced_custom_object(*args[:5], body)
            return api.patch_namespaced_custom_object(*args, **kw)

    event = AssignmentChanged(model="x", generation=2)
    applied = apply.apply(
        Interfering(), NAMESPACE, name,
        lambda current: plan.desired_service(current, event, Strategy()),
    )  # fmt: skip
    assert (applied.outcome, applied.attempts) == (apply.ApplyOutcome.PATCHED, 2)
    assert applied.service is not None
    assert applied.service["metadata"]["annotations"]["example.com/touched"] == "yes"
    assert applied.service["spec"]["template"]["metadata"]["name"] == f"{name}-g2"


@pytest.mark.skipif(bool(IMAGE), reason="ROLLWAY_TEST_ROLLOUT_IMAGE is set: its revisions work")
def test_a_failed_revision_is_read_from_the_status(api: Any, name: str) -> None:
    config = RolloutConfig(NAMESPACE, {"x": (name,)}, create=True,
                           template=minimal_template(UNPULLABLE))  # fmt: skip
    roll_out(api, config, AssignmentChanged(model="x", generation=1))
    failed = wait_for(
        api, name, lambda s: revision_readiness(s).get(f"{name}-g1") is Readiness.FAILED,
        "revision g1 failed",
    )  # fmt: skip
    assert plan.split_of(failed).stable == f"{name}-g1"


@pytest.mark.skipif(not IMAGE, reason="ROLLWAY_TEST_ROLLOUT_IMAGE is not set")
def test_canary_promote_and_rollback_on_ready_revisions(api: Any, name: str) -> None:
    template = service_from_template(minimal_template(IMAGE), name, "x", NAMESPACE)
    template["metadata"]["annotations"]["rollway.dev/strategy"] = "canary"
    config = RolloutConfig(NAMESPACE, {"x": (name,)}, create=True, template=template)
    g1, g2 = f"{name}-g1", f"{name}-g2"

    def routed(service: Service) -> list[tuple[str, int]]:
        status = service.get("status") or {}
        return [(t["revisionName"], t["percent"]) for t in status.get("traffic") or ()]

    roll_out(api, config, AssignmentChanged(model="x", generation=1))
    wait_for(api, name, lambda s: routed(s) == [(g1, 100)], "g1 serving")
    roll_out(api, config, AssignmentChanged(model="x", generation=2))
    wait_for(api, name, lambda s: routed(s) == [(g1, 90), (g2, 10)], "the canary")
    apply.apply(api, NAMESPACE, name, lambda s: None if s is None else plan.promote(s))
    wait_for(api, name, lambda s: routed(s) == [(g2, 100)], "g2 promoted")
    apply.apply(api, NAMESPACE, name, lambda s: None if s is None else plan.rollback(s))
    wait_for(api, name, lambda s: routed(s) == [(g1, 100)], "the rollback to g1")
