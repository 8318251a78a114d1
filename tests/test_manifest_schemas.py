"""Every captured Kubernetes object passes the API's JSON schema in strict mode.

Strict mode rejects unknown fields, which is what the API server's field validation
does for server-side apply (pulumi-kubernetes' default).
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest

# The newest bundled schema and the oldest Kubernetes release we claim to support.
NEWEST = "1.37.0"
OLDEST = "1.29.0"
VERSIONS = [OLDEST, NEWEST]

# Both stack files, plus variants that change the manifests' shape (other probe paths
# on 3.4, one member without waitFor, other namespace and domain).
RUNS = {
    "skip": ("skip", {}),
    "noskip": ("noskip", {}),
    "etcd-3.4": ("noskip", {"image": "gcr.io/etcd-development/etcd:v3.4.23"}),
    "one-member": ("noskip", {"members": "1"}),
    "five-elsewhere": (
        "skip",
        {"members": "5", "namespace": "etcd-demo", "clusterDomain": "example.internal"},
    ),
}


@pytest.fixture(scope="module")
def manifests(run_stack) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for label, (stack, overrides) in RUNS.items():
        for manifest in run_stack(stack, overrides).manifests():
            found.append((f"{label}/{manifest['kind']}/{manifest['metadata']['name']}", manifest))
    return found


def floats(value: Any, where: str = "") -> list[str]:
    if isinstance(value, float):
        return [where]
    if isinstance(value, dict):
        return [f for key, item in value.items() for f in floats(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [f for index, item in enumerate(value) for f in floats(item, f"{where}[{index}]")]
    return []


def test_claimed_versions_are_bundled():
    bundled = set(kubernetes_validate.utils.all_versions())
    assert {OLDEST, NEWEST} <= bundled
    assert kubernetes_validate.utils.latest_version() == NEWEST


def test_every_kind_is_captured(manifests):
    kinds = [manifest["kind"] for _, manifest in manifests]
    # 3+3+1+5 Services/Pods over the runs, and 2n+1 Secrets each.
    assert kinds.count("Pod") == 3 + 3 + 3 + 1 + 5
    assert kinds.count("Service") == kinds.count("Pod")
    assert kinds.count("Secret") == 7 + 7 + 7 + 3 + 11
    assert kinds.count("NetworkPolicy") == 5  # one per run
    # Any other kind added later is validated too.
    assert {"Pod", "Service", "Secret", "NetworkPolicy"} <= set(kinds)


def test_numbers_are_integers(manifests):
    # jsonschema counts 2379.0 as an integer; the API server's decoder does not.
    assert [where for label, manifest in manifests for where in floats(manifest, label)] == []
    pod = next(m for _, m in manifests if m["kind"] == "Pod")
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30
    assert type(pod["spec"]["terminationGracePeriodSeconds"]) is int


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_pass_strict_schema_validation(manifests, version):
    failures = {}
    for label, manifest in manifests:
        try:
            validated = kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures[label] = str(error)
        else:
            assert validated == version.rsplit(".", 1)[0]
    assert failures == {}


def broken(manifest: dict[str, Any], path: list[str | int], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(manifest)
    target: Any = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return changed


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Pod", ["spec", "containers", 0, "imagePullPolicyy"], "Always"),  # unknown field
        ("Pod", ["spec", "terminationGracePeriodSeconds"], "30"),  # wrong type
        ("Pod", ["spec", "containers", 0, "securityContext", "runAsNonRoot"], "true"),
        ("Service", ["spec", "publishNotReadyAddresss"], True),
        ("Service", ["spec", "ports", 0, "port"], "2379"),
        ("Secret", ["metadata", "labelz"], {}),
    ],
)
def test_validation_rejects_broken_manifests(manifests, version, kind, path, value):
    manifest = next(m for _, m in manifests if m["kind"] == kind)
    kubernetes_validate.validate(manifest, version, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken(manifest, path, value), version, strict=True)


def test_strict_mode_is_what_catches_unknown_fields(manifests):
    pod = next(m for _, m in manifests if m["kind"] == "Pod")
    typo = broken(pod, ["spec", "containers", 0, "imagePullPolicyy"], "Always")
    kubernetes_validate.validate(typo, NEWEST, strict=False)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, NEWEST, strict=True)
