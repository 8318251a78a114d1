"""The manifests both stacks declare pass a real scanner (checkov) and the restricted
pod rules we promise: no service-account token, requests and limits, a pinned image.

checkov lives in its own venv (`make checkov-venv`; it conflicts with pulumi's
`packaging` pin). Skipped checks are listed, with reasons, only in checkov/skips.yaml.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.program import PROJECT_DIR, ProgramRun

IMAGE = "gcr.io/etcd-development/etcd"
# Both stack files, and both on etcd versions without /livez (their liveness probe is
# chosen differently, see components/versions.py): label -> (stack, overrides).
RUNS = {
    "skip": ("skip", {}),
    "noskip": ("noskip", {}),
    "skip-3.5.1": ("skip", {"image": f"{IMAGE}:v3.5.1"}),
    "noskip-3.4.23": ("noskip", {"image": f"{IMAGE}:v3.4.23"}),
}
SKIPS_FILE = PROJECT_DIR / "checkov" / "skips.yaml"
CHECKOV = Path(os.environ.get("CHECKOV_BIN", PROJECT_DIR / ".venv-checkov" / "bin" / "checkov"))

# Offline and quiet: no platform download, no PyPI version check, no mapping fetch.
CHECKOV_ENV = {
    "BC_SKIP_MAPPING": "TRUE",
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
    "LOG_LEVEL": "WARNING",
}

# The restricted-profile checks every Pod must pass (not merely "not fail"):
# id -> what it proves.
REQUIRED_POD_CHECKS = {
    "CKV_K8S_8": "liveness probe",
    "CKV_K8S_9": "readiness probe",
    "CKV_K8S_10": "CPU requests",
    "CKV_K8S_11": "CPU limits",
    "CKV_K8S_12": "memory requests",
    "CKV_K8S_13": "memory limits",
    "CKV_K8S_14": "image tag fixed, not latest",
    "CKV_K8S_16": "not privileged",
    "CKV_K8S_20": "no privilege escalation",
    "CKV_K8S_22": "read-only root filesystem",
    "CKV_K8S_23": "not root",
    "CKV_K8S_28": "no NET_RAW",
    "CKV_K8S_31": "seccomp RuntimeDefault",
    "CKV_K8S_37": "all capabilities dropped",
    "CKV_K8S_38": "no service-account token",
    "CKV_K8S_40": "high UID",
}

needs_checkov = pytest.mark.skipif(
    not CHECKOV.exists(), reason=f"{CHECKOV} is absent: run `make checkov-venv` (make test does)"
)


def load_skips() -> dict[str, str]:
    skips = yaml.safe_load(SKIPS_FILE.read_text()) or {}
    assert isinstance(skips, dict), f"{SKIPS_FILE}: expected a mapping check id -> reason"
    return {str(check): str(reason).strip() for check, reason in skips.items()}


def start_checkov(directory: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(CHECKOV), "-d", str(directory), "--framework", "kubernetes", "-o", "json", "--skip-download"]
        + list(options),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **CHECKOV_ENV},
        cwd=directory,
    )


def checkov_report(process: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    # Exit 1 only means "some check failed"; the report says which.
    assert process.returncode in (0, 1), f"checkov exited {process.returncode}:\n{stderr[-4000:]}"
    report = json.loads(stdout)
    if isinstance(report, list):  # one entry per framework
        (report,) = [r for r in report if r.get("check_type") == "kubernetes"]
    assert isinstance(report, dict)
    return report


def failed_by_check(report: dict[str, Any]) -> dict[str, list[str]]:
    failed: dict[str, list[str]] = {}
    for check in report.get("results", {}).get("failed_checks", []):
        failed.setdefault(check["check_id"], []).append(
            f"{check['file_path']}: {check['resource']} ({check['check_name']})"
        )
    return failed


def _placeholders(manifest: dict[str, Any]) -> dict[str, Any]:
    """Secret values replaced: checkov judges the object, not the PEM, and key material
    has no business in a scan directory."""
    if manifest.get("kind") != "Secret":
        return manifest
    masked = dict(manifest)
    for field in ("data", "stringData"):
        if isinstance(manifest.get(field), dict):
            masked[field] = {key: "PLACEHOLDER" for key in manifest[field]}
    return masked


@pytest.fixture(scope="module")
def runs(run_stack) -> dict[str, ProgramRun]:
    return {label: run_stack(stack, overrides) for label, (stack, overrides) in RUNS.items()}


def manifest_file(label: str, manifest: dict[str, Any]) -> str:
    """Where a run's object is written, relative to the scanned directory."""
    return f"{label}/{manifest['kind']}-{manifest['metadata']['name']}.yaml"


@pytest.fixture(scope="module")
def manifest_dir(runs: dict[str, ProgramRun], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every Kubernetes object of every run, one YAML file each."""
    root = tmp_path_factory.mktemp("manifests")
    for label, run in runs.items():
        for manifest in run.manifests():
            path = root / manifest_file(label, manifest)
            path.parent.mkdir(exist_ok=True)
            path.write_text(yaml.safe_dump(_placeholders(manifest), sort_keys=False))
    return root


@pytest.fixture(scope="module")
def scans(manifest_dir: Path) -> dict[str, dict[str, Any]]:
    """Two scans, run side by side: with the skips (the verdict), and only the skipped
    checks (to prove each skip is still needed)."""
    skips = load_skips()
    processes = {
        "verdict": start_checkov(manifest_dir, *(["--skip-check", ",".join(skips)] if skips else []))
    }
    if skips:
        processes["skipped only"] = start_checkov(manifest_dir, "--check", ",".join(skips))
    return {name: checkov_report(process) for name, process in processes.items()}


@pytest.fixture(scope="module")
def report(scans: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return scans["verdict"]


@needs_checkov
def test_checkov_finds_no_failed_check(report: dict[str, Any], manifest_dir: Path) -> None:
    summary = report["summary"]
    files = list(manifest_dir.rglob("*.yaml"))
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] == len(files), "checkov did not scan every manifest"
    assert summary["failed"] == 0, "checkov failed checks:\n" + "\n".join(
        f"{check}: {', '.join(where)}" for check, where in sorted(failed_by_check(report).items())
    )
    assert summary["passed"] > 0


@needs_checkov
def test_every_pod_passes_the_restricted_checks(report: dict[str, Any], runs: dict[str, ProgramRun]) -> None:
    # By file: the runs on other etcd versions declare Pods of the same names.
    passed = {(c["check_id"], c["file_path"]) for c in report["results"].get("passed_checks", [])}
    pods = [f"/{manifest_file(label, m)}" for label, r in runs.items() for m in r.manifests("Pod")]
    assert len(pods) == 3 * len(RUNS)
    missing = [
        f"{pod}: {check} ({meaning})"
        for pod in pods
        for check, meaning in REQUIRED_POD_CHECKS.items()
        if (check, pod) not in passed
    ]
    assert not missing, "checks not passed:\n" + "\n".join(missing)


def test_skipped_checks_have_reasons() -> None:
    for check, reason in load_skips().items():
        assert check.startswith(("CKV_K8S_", "CKV2_K8S_")), f"{check}: not a checkov Kubernetes check id"
        assert reason and "\n" not in reason, f"{check}: needs a one-line reason"
        if reason.startswith("PENDING:"):
            warnings.warn(f"checkov {check} skipped until fixed: {reason}", stacklevel=1)


@needs_checkov
def test_every_skipped_check_still_fails_without_the_skip(scans: dict[str, dict[str, Any]]) -> None:
    """A skip that is no longer needed hides nothing, but must go: keep the list honest."""
    skips = load_skips()
    if not skips:
        pytest.skip("no checkov check is skipped")
    stale = sorted(set(skips) - set(failed_by_check(scans["skipped only"])))
    assert not stale, f"these checks pass now; remove them from {SKIPS_FILE.name}: {stale}"


# Our own assertions on the same manifests, independent of checkov's rules.


@pytest.mark.parametrize("label", RUNS)
def test_pods_mount_no_service_account_token(runs: dict[str, ProgramRun], label: str) -> None:
    for pod in runs[label].manifests("Pod"):
        spec = pod["spec"]
        assert spec.get("automountServiceAccountToken") is False, pod["metadata"]["name"]
        projected = [v for v in spec.get("volumes", []) if "projected" in v]
        assert not any(
            "serviceAccountToken" in source for v in projected for source in v["projected"].get("sources", [])
        ), pod["metadata"]["name"]


@pytest.mark.parametrize("label", RUNS)
def test_containers_set_requests_and_limits(runs: dict[str, ProgramRun], label: str) -> None:
    for pod in runs[label].manifests("Pod"):
        for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert set(resources.get(kind, {})) >= {"cpu", "memory"}, (
                    f"{pod['metadata']['name']}/{container['name']}: {kind} {resources.get(kind)}"
                )


@pytest.mark.parametrize("label", RUNS)
def test_images_are_pinned_not_latest(runs: dict[str, ProgramRun], label: str) -> None:
    for pod in runs[label].manifests("Pod"):
        for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            image = container["image"]
            name, _, digest = image.partition("@")
            tag = name.rsplit("/", 1)[-1].partition(":")[2]
            assert digest or tag not in ("", "latest"), f"{pod['metadata']['name']}: image {image!r}"
