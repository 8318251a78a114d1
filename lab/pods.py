"""Turn declared Pods into local processes: volumes become directories, Secrets become
files at their mount paths (paths rewritten into the run directory), the image's etcd
becomes the local binary, the container's securityContext becomes setpriv options, and
its declared env becomes the process's whole environment.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.cluster_plan import ETCD_BINARY, ETCDCTL_BINARY

from .network import PodPlan


class LabPodError(ValueError):
    """The Pod asks for something the lab cannot run."""


# PATH as container runtimes set it when the image declares none (containerd's default,
# also the etcd images' own). The lab runs its own tools (ip, setpriv) by absolute path.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Pod fields an env var may take with valueFrom.fieldRef (those the lab knows a value for).
_FIELD_REFS = ("metadata.name", "metadata.namespace", "status.podIP")
_VAR_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True)
class HttpProbe:
    kind: str  # "readiness" / "liveness" / "startup"
    path: str
    port: int
    # Kubernetes' defaults; a probe fails only after failure_threshold consecutive
    # failures, one per period, after the initial delay.
    period_seconds: float = 10
    failure_threshold: int = 3
    initial_delay_seconds: float = 0
    timeout_seconds: float = 1

    @property
    def failure_window(self) -> float:
        """Seconds after the start before kubelet can have counted this probe failed."""
        return self.initial_delay_seconds + self.period_seconds * self.failure_threshold


@dataclass
class Container:
    pod: str
    netns: str
    pod_ip: str
    argv: list[str]  # what runs inside the namespace (setpriv + etcd + rewritten args)
    log_path: Path
    mounts: dict[str, Path]  # mountPath -> local directory
    # The process's whole environment: the declared env on DEFAULT_PATH, never the
    # lab's (an ETCD_* or ETCDCTL_* variable there would change what runs).
    env: dict[str, str]
    probes: list[HttpProbe] = field(default_factory=list)

    def rewrite(self, text: str) -> str:
        return rewrite_paths(text, self.mounts)


def rewrite_paths(text: str, mounts: dict[str, Path]) -> str:
    """Replace every mount path inside `text` (e.g. `--cert-file=/etc/x/tls.crt`)."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        start = 0
        while (i := text.find(mount_path, start)) != -1:
            end = i + len(mount_path)
            if end == len(text) or text[end] == "/":
                text = text[:i] + str(mounts[mount_path]) + text[end:]
                start = i + len(str(mounts[mount_path]))
            else:
                start = end
    return text


def _reachable_by_others(path: Path) -> bool:
    """Can a non-root user execute `path` (every parent searchable, file executable)?"""
    return all(part.stat().st_mode & 0o001 for part in [path, *path.parents])


def secret_files(secret: dict[str, Any]) -> dict[str, bytes]:
    files = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    files.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
    return files


def container_env(container: dict[str, Any], plan: PodPlan) -> dict[str, str]:
    """The environment Kubernetes gives the container: its declared `env` (values and the
    pod fields the lab knows), on the default PATH unless it declares its own."""
    if container.get("envFrom"):
        raise LabPodError(f"pod {plan.name}: envFrom is not supported by the lab")
    fields = {"metadata.name": plan.name, "metadata.namespace": plan.namespace, "status.podIP": plan.ip}
    env = {"PATH": DEFAULT_PATH}
    for var in container.get("env") or []:
        name, source = var["name"], var.get("valueFrom")
        if source is None:
            env[name] = str(var.get("value", ""))
        elif set(source) == {"fieldRef"} and source["fieldRef"].get("fieldPath") in _FIELD_REFS:
            env[name] = fields[source["fieldRef"]["fieldPath"]]
        else:
            raise LabPodError(
                f"pod {plan.name}: env {name}: only value and fieldRef {', '.join(_FIELD_REFS)} are supported"
            )
    return env


def materialize(
    pod: dict[str, Any],
    plan: PodPlan,
    secrets: dict[str, dict[str, Any]],
    pod_dir: Path,
    binaries: dict[str, Path],
) -> Container:
    """Create the pod's volumes under pod_dir and return how to run its container."""
    spec = pod["spec"]
    containers = spec.get("containers") or []
    if len(containers) != 1:
        raise LabPodError(f"pod {plan.name}: the lab runs exactly one container, got {len(containers)}")
    container = containers[0]
    pod_security = spec.get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}
    uid = int(security.get("runAsUser", 0))
    gid = int(security.get("runAsGroup", uid))
    fs_group = pod_security.get("fsGroup")

    pod_dir.mkdir(parents=True)
    pod_dir.chmod(0o711)
    volume_dirs: dict[str, Path] = {}
    for volume in spec.get("volumes") or []:
        target = pod_dir / "volumes" / volume["name"]
        target.mkdir(parents=True)
        target.parent.chmod(0o711)
        group = int(fs_group) if fs_group is not None else gid
        if "emptyDir" in volume:
            # As kubelet does with fsGroup: group-owned, setgid, group-writable.
            os.chown(target, 0, group)
            target.chmod(0o2770)
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            if name not in secrets:
                raise LabPodError(f"pod {plan.name}: Secret {name!r} was not declared")
            mode = int(volume["secret"].get("defaultMode", 0o644))
            os.chown(target, 0, group)
            target.chmod(0o750)
            for file_name, content in secret_files(secrets[name]).items():
                path = target / file_name
                path.write_bytes(content)
                os.chown(path, 0, group)
                path.chmod(mode)
        else:
            raise LabPodError(
                f"pod {plan.name}: volume {volume['name']!r}: only emptyDir and secret are supported"
            )
        volume_dirs[volume["name"]] = target

    mounts = {m["mountPath"]: volume_dirs[m["name"]] for m in container.get("volumeMounts") or []}
    command = [*(container.get("command") or []), *(container.get("args") or [])]
    env = container_env(container, plan)
    declared = {var["name"] for var in container.get("env") or []}
    for arg in command:
        # Kubernetes expands $(VAR) of a declared variable in command and args; the lab does not.
        if any(name in declared for name in _VAR_REFERENCE.findall(arg)):
            raise LabPodError(f"pod {plan.name}: {arg!r}: $(VAR) expansion is not supported by the lab")
    if not command or command[0] not in binaries:
        raise LabPodError(f"pod {plan.name}: command {command[:1]} is not one of {sorted(binaries)}")
    binary = binaries[command[0]]
    if uid != 0 and not _reachable_by_others(binary):
        # The container user could not execute a binary under e.g. /root: use a copy.
        copy = pod_dir.parent / "bin" / binary.name
        if not copy.exists():
            copy.parent.mkdir(exist_ok=True)
            copy.parent.chmod(0o711)
            shutil.copy2(binary, copy)
            copy.chmod(0o755)
        binary = copy
    argv = [str(binary), *(rewrite_paths(arg, mounts) for arg in command[1:])]
    if uid != 0 or gid != 0:
        groups = ",".join(str(g) for g in dict.fromkeys([gid, *([int(fs_group)] if fs_group else [])]))
        setpriv = shutil.which("setpriv") or "setpriv"  # absolute: the pod's PATH is its own
        privileges = [setpriv, f"--reuid={uid}", f"--regid={gid}", f"--groups={groups}"]
        if security.get("allowPrivilegeEscalation") is False:
            privileges.append("--no-new-privs")
        if "ALL" in ((security.get("capabilities") or {}).get("drop") or []):
            privileges += ["--inh-caps=-all", "--bounding-set=-all"]
        argv = [*privileges, "--", *argv]

    named_ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if "name" in p}
    probes = []
    for kind in ("readiness", "liveness", "startup"):
        probe = container.get(f"{kind}Probe")
        if not probe:
            continue
        http = probe.get("httpGet")
        if not http:
            raise LabPodError(
                f"pod {plan.name}: {kind} probe is not httpGet (exec needs a shell the image lacks)"
            )
        port = http["port"]
        probes.append(
            HttpProbe(
                kind,
                http.get("path", "/"),
                named_ports[port] if isinstance(port, str) else int(port),
                period_seconds=float(probe.get("periodSeconds", 10)),
                failure_threshold=int(probe.get("failureThreshold", 3)),
                initial_delay_seconds=float(probe.get("initialDelaySeconds", 0)),
                timeout_seconds=float(probe.get("timeoutSeconds", 1)),
            )
        )
    log_path = pod_dir / "container.log"
    return Container(plan.name, plan.netns, plan.ip, argv, log_path, mounts, env, probes)


def image_binaries(etcd: Path, etcdctl: Path | None) -> dict[str, Path]:
    """The image's binaries the lab replaces with local ones."""
    found = {ETCD_BINARY: etcd, "etcd": etcd}
    if etcdctl is not None:
        found.update({ETCDCTL_BINARY: etcdctl, "etcdctl": etcdctl})
    return found


def flag_value(argv: list[str], flag: str) -> str | None:
    prefix = f"--{flag}="
    return next((a[len(prefix) :] for a in argv if a.startswith(prefix)), None)


def has_skip_flag(argv: list[str]) -> bool:
    return any(a.split("=", 1)[0].endswith("skip-client-san-verification") for a in argv)
