"""Apply: read a Knative Service, plan, and write the plan back, with
optimistic concurrency, through the ``kubernetes`` client's CustomObjectsApi.

For one Service, at most ``attempts`` times:

1. GET it (404: it does not exist).
2. ``compute(current)``, a pure plan, gives the desired Service (None: leave it
   absent). Knative's rules are checked (``service.check_service``) before
   anything is written.
3. Unchanged: done. Otherwise PATCH it with a JSON merge patch (RFC 7386) of
   the metadata and spec that differ, carrying the ``resourceVersion`` read in
   step 1: the API server answers 409 Conflict when the Service changed in
   between (another rollout, an operator, Knative's defaulting), and the loop
   reads it again and recomputes. A patch with a resourceVersion is exactly as
   conditional as a replace (PUT), and needs only the ``patch`` verb that the
   rollout Role grants (infra/base/rbac.yaml); replace would need ``update``.
4. Absent, with creation allowed: CREATE it. 409 AlreadyExists (someone else
   created it meanwhile) goes back to step 1. Creation is opt-in per
   namespace: the ``create`` flag here, and the Role of
   ``infra/components/instance-creation`` there.

Errors become rollway's error tree once (``api_error``): 409s that outlast the
attempts and 429/5xx/connection failures are Unavailable (retriable); 403 is
PermissionDenied, 400/422 (a refused Service) InvalidArgument.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from functions.rollout.service import API_VERSION, KIND, Service, check_service
from loader import backoff
from loader.errors import (
    ConfigError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RollwayError,
    Unauthenticated,
    Unavailable,
)

GROUP, VERSION, PLURAL = "serving.knative.dev", "v1", "services"
DEFAULT_ATTEMPTS = 5
# Between conflicting writes: other writers of the Service retry too (full jitter).
CONFLICTS = backoff.Backoff(initial_seconds=0.1, max_seconds=1.0)
REQUEST_TIMEOUT_SECONDS = 30.0
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# In a checkout; images pass --template (ROLLWAY_ROLLOUT_TEMPLATE) instead.
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "base" / "serving-grpc.yaml"

log = logging.getLogger("rollway.rollout")

Compute = Callable[[Service | None], Service | None]


class ServicesApi(Protocol):
    """The part of ``kubernetes.client.CustomObjectsApi`` that rollout uses."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any: ...
    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kw: Any
    ) -> Any: ...
    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kw: Any
    ) -> Any: ...


class ApplyOutcome(enum.Enum):
    CREATED = "created"
    PATCHED = "patched"
    UNCHANGED = "unchanged"
    ABSENT = "absent"  # no Service, and creation is off (or the plan made none)


@dataclass(frozen=True)
class Applied:
    namespace: str
    name: str
    outcome: ApplyOutcome
    service: Service | None  # as the API server returned it
    attempts: int


def apply(
    api: ServicesApi,
    namespace: str,
    name: str,
    compute: Compute,
    *,
    create: bool = False,
    attempts: int = DEFAULT_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> Applied:
    """Runs the loop above for Service ``namespace/name``; raises what ``compute``
    raises, or the RollwayError of a failed call."""
    where = f"Service {namespace}/{name}"
    for retry in backoff.retrying(
        CONFLICTS, retry_on=_Changed, max_attempts=attempts, what=f"writing {where}", sleep=sleep
    ):
        with retry:
            attempt = retry.retry_state.attempt_number
            current = get(api, namespace, name)
            if current is None and not create:
                return Applied(namespace, name, ApplyOutcome.ABSENT, None, attempt)
            desired = compute(current)
            if desired is None:
                return Applied(namespace, name, ApplyOutcome.ABSENT if current is None else
                               ApplyOutcome.UNCHANGED, current, attempt)  # fmt: skip
            if problems := check_service(desired):
                raise InvalidArgument(f"the planned {where} breaks Knative's rules: {problems}")
            try:
                return _write(api, namespace, name, current, desired, attempt)
            except Exception as err:
                if status_of(err) not in (404, 409):  # 404: deleted since the GET
                    raise api_error(err, where) from None
                log.info("%s changed while being written (HTTP %s), attempt %d of %d",
                         where, status_of(err), attempt, attempts)  # fmt: skip
                raise _Changed from None
    raise Unavailable(f"{where} kept changing: gave up after {attempts} attempts")


class _Changed(Exception):
    """The Service changed (or went) between the GET and the write: read it again."""


def _write(
    api: ServicesApi, namespace: str, name: str, current: Service | None, desired: Service,
    attempt: int,
) -> Applied:  # fmt: skip
    """Step 3 or 4: PATCH ``current`` into ``desired``, or CREATE ``desired``."""
    if current is None:
        body = {**desired, "metadata": {**desired["metadata"], "namespace": namespace}}
        created = api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        return Applied(namespace, name, ApplyOutcome.CREATED, created, attempt)
    patch = service_patch(current, desired)
    if patch is None:
        return Applied(namespace, name, ApplyOutcome.UNCHANGED, current, attempt)
    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, patch, _request_timeout=REQUEST_TIMEOUT_SECONDS
    )
    return Applied(namespace, name, ApplyOutcome.PATCHED, patched, attempt)


def get(api: ServicesApi, namespace: str, name: str) -> Service | None:
    """The Service, or None if there is none."""
    try:
        found = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
    except Exception as err:
        if status_of(err) == 404:
            return None
        raise api_error(err, f"Service {namespace}/{name}") from None
    service: Service = found
    return service


def service_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> Service | None:
    """The merge patch from ``current`` to ``desired`` over the fields rollway
    writes (labels, annotations, spec), conditional on current's resourceVersion;
    None when they do not differ."""

    def writable(service: Mapping[str, Any]) -> dict[str, Any]:
        metadata = service.get("metadata") or {}
        return {
            "metadata": {k: metadata.get(k) or {} for k in ("labels", "annotations")},
            "spec": service.get("spec") or {},
        }

    patch = merge_patch(writable(current), writable(desired))
    if not patch:
        return None
    metadata = patch.setdefault("metadata", {})
    metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
    return patch


def merge_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386: objects merge key by key, null deletes, anything else
    (lists included) is replaced whole. {} when equal."""
    patch: dict[str, Any] = {}
    for key in before.keys() - after.keys():
        patch[key] = None
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            if sub := merge_patch(old, value):
                patch[key] = sub
        elif key not in before or old != value:
            patch[key] = value
    return patch


def status_of(err: BaseException) -> int | None:
    """The HTTP status of a ``kubernetes`` ApiException (or a fake's)."""
    status = getattr(err, "status", None)
    return status if isinstance(status, int) else None


def api_error(err: BaseException, where: str) -> RollwayError:
    status = status_of(err)
    body = getattr(err, "body", None)
    try:
        detail = str(json.loads(body).get("message", "")) if body else ""
    except (ValueError, AttributeError):
        detail = ""
    detail = detail or str(getattr(err, "reason", "") or err)
    if isinstance(err, RollwayError):
        return err
    if status == 401:
        return Unauthenticated(f"{where}: the Kubernetes API refused the credentials: {detail}")
    if status == 403:
        return PermissionDenied(
            f"{where}: forbidden ({detail}); the rollout ServiceAccount needs get and patch "
            "(infra/base/rbac.yaml), and create for new Services "
            "(infra/components/instance-creation)"
        )
    if status == 404:
        return NotFound(f"{where}: not found ({detail}); is Knative Serving installed?")
    if status in (400, 422):
        return InvalidArgument(f"{where}: the Kubernetes API refused it: {detail}")
    return Unavailable(
        f"{where}: the Kubernetes API failed: {status or type(err).__name__} {detail}"
    )


def load_api() -> ServicesApi:
    """A CustomObjectsApi configured the client's default way: in a pod its
    ServiceAccount, elsewhere ``KUBECONFIG`` (or ~/.kube/config)."""
    try:
        from kubernetes import client, config  # type: ignore[import-untyped, unused-ignore]
    except ImportError as err:
        raise ConfigError(f"the rollout needs the kubernetes package ({err})") from None

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as err:
            raise ConfigError(
                f"no Kubernetes configuration (in-cluster or KUBECONFIG): {err}"
            ) from None
    api: ServicesApi = client.CustomObjectsApi()
    return api


def default_namespace() -> str:
    """The pod's namespace in a cluster, else the kubeconfig context's, else default."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        pass
    try:
        from kubernetes import config  # type: ignore[import-untyped, unused-ignore]

        _, active = config.list_kube_config_contexts()
        namespace = (active or {}).get("context", {}).get("namespace")
        return str(namespace) if namespace else "default"
    except Exception:  # no kubeconfig: the caller's API calls will say so
        return "default"


def load_template(path: Path) -> Service:
    """The first Knative Service in a YAML file (a kustomize base or rendered
    overlay); ConfigError names the file."""
    import yaml  # type: ignore[import-untyped, unused-ignore]

    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read the Service template {path}: {err}") from None
    for document in documents:
        if isinstance(document, dict) and (document.get("apiVersion"), document.get("kind")) == (
            API_VERSION,
            KIND,
        ):
            template: Service = document
            return template
    raise ConfigError(f"the Service template {path} holds no {API_VERSION} {KIND}")
