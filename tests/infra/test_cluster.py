"""Server-side dry runs against a real cluster: only when KUBECONFIG is set.

What the offline schemas cannot check is checked here by the API server and
the admission webhooks: Knative's own rules (one port per container, probe
ports, feature flags such as emptyDir volumes), CEL rules, and whether the CRDs
are installed at all. Nothing is created: `--dry-run=server`.

Needs: Knative Serving and Eventing with eventing-kafka (KafkaSource),
Strimzi's CRDs, and the overlay's namespace (rollway-dev, rollway).
"""

from __future__ import annotations

import os

import pytest

from tests.infra.conftest import OVERLAYS, rendered
from tests.infra.validation import INFRA, cluster_kubectl, require_on_cluster

pytestmark = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="KUBECONFIG is not set: no cluster to dry-run the manifests against",
)

REQUIRED_CRDS = (
    "services.serving.knative.dev",
    "kafkasources.sources.knative.dev",
    "kafkatopics.kafka.strimzi.io",
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_a_server_side_dry_run(overlay: str) -> None:
    for crd in REQUIRED_CRDS:
        require_on_cluster("customresourcedefinition", crd)
    namespace = rendered(overlay)[0]["metadata"]["namespace"]
    require_on_cluster("namespace", namespace)
    result = cluster_kubectl("apply", "--dry-run=server", "-k", str(INFRA / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout


def test_secret_templates_pass_a_server_side_dry_run() -> None:
    namespace = rendered("dev")[0]["metadata"]["namespace"]
    require_on_cluster("namespace", namespace)
    result = cluster_kubectl(
        "apply", "--dry-run=server", "--namespace", namespace, "-k", str(INFRA / "secrets")
    )
    assert result.returncode == 0, result.stderr
