"""An in-memory stand-in for ``kubernetes.client.CustomObjectsApi`` on
services.serving.knative.dev: resourceVersions, conditional merge patches
(409 on a stale resourceVersion), 404 and 409 AlreadyExists, and hooks that
play a concurrent writer. Fine for unit tests of the retry logic; what the API
server and Knative really do is checked by test_cluster.py."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from functions.rollout.apply import GROUP, PLURAL, VERSION

Service = dict[str, Any]


class FakeApiError(Exception):
    """Shaped like kubernetes.client.exceptions.ApiException."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"({status}) {reason}")
        self.status = status
        self.reason = reason
        self.body = json.dumps({"kind": "Status", "message": message}) if message else ""


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class FakeServices:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Service] = {}
        self.version = 0
        self.calls: list[str] = []
        # Run before the next patch or create (one per call): a concurrent writer.
        self.before_write: list[Callable[[FakeServices], object]] = []
        # call ("get", "patch", "create") -> errors its next calls raise instead
        self.failures: dict[str, list[FakeApiError]] = {}

    def put(self, namespace: str, service: Service) -> Service:
        """Stores ``service`` as a new resourceVersion (what another writer does)."""
        self.version += 1
        stored = copy.deepcopy(service)
        stored["metadata"]["resourceVersion"] = str(self.version)
        stored["metadata"]["namespace"] = namespace
        self.objects[(namespace, stored["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    def _check(self, group: str, version: str, plural: str, call: str) -> None:
        assert (group, version, plural) == (GROUP, VERSION, PLURAL)
        self.calls.append(call)
        if self.failures.get(call):
            raise self.failures[call].pop(0)

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Service:
        self._check(group, version, plural, "get")
        if (namespace, name) not in self.objects:
            raise FakeApiError(404, "Not Found")
        return copy.deepcopy(self.objects[(namespace, name)])

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, **kw: Any
    ) -> Service:
        self._check(group, version, plural, "patch")
        if self.before_write:
            self.before_write.pop(0)(self)
        current = self.objects.get((namespace, name))
        if current is None:
            raise FakeApiError(404, "Not Found")
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise FakeApiError(409, "Conflict", "the object has been modified")
        return self.put(namespace, merge(current, body))

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kw: Any
    ) -> Service:
        self._check(group, version, plural, "create")
        if self.before_write:
            self.before_write.pop(0)(self)
        if (namespace, body["metadata"]["name"]) in self.objects:
            raise FakeApiError(409, "AlreadyExists")
        assert body["metadata"].get("namespace") == namespace
        return self.put(namespace, body)
