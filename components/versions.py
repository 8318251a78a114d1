"""etcd versions and the few behaviours that depend on them.

One table, one reader: every version-dependent choice the program makes (how the
skip flag is spelled, which probe paths exist) is decided here, so manifests never
compare versions themselves. The facts behind it were measured on etcd 3.4.23 and
3.5.1 and read from etcd's source and changelogs for the other versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

EXPERIMENTAL_SKIP_FLAG = "--experimental-peer-skip-client-san-verification"
STABLE_SKIP_FLAG = "--peer-skip-client-san-verification"

_VERSION_RE = re.compile(r"v?([0-9]+)\.([0-9]+)\.([0-9]+)(?:[-+][0-9A-Za-z.+-]*)?")


@total_ordering
@dataclass(frozen=True)
class EtcdVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> EtcdVersion:
        """Parse `3.5.1`, `v3.6.16` or `3.6.0-rc.1` (exactly: no padding, ASCII digits);
        raise ValueError otherwise."""
        match = _VERSION_RE.fullmatch(text)
        if not match:
            raise ValueError(f"not an etcd version: {text!r}")
        major, minor, patch = (int(part) for part in match.groups())
        return cls(major, minor, patch)

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, EtcdVersion):
            return NotImplemented
        return self.key < other.key

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def version_from_image(image: str) -> EtcdVersion | None:
    """The etcd version an image tag names (`...etcd:v3.6.16` -> 3.6.16), or None.

    A digest after the tag (`...etcd:v3.6.16@sha256:...`) pins the bytes of that tag, so
    the tag still names the version. A bare digest or a tag without a version yields
    None: the caller must then be told to set `etcdVersion`.
    """
    last = image.partition("@")[0].rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    tag = last.split(":", 1)[1]
    try:
        return EtcdVersion.parse(tag)
    except ValueError:
        return None


def _v(text: str) -> EtcdVersion:
    return EtcdVersion.parse(text)


OLDEST_SUPPORTED = _v("3.4.0")
# etcd 3 only: another major version may spell or drop any flag this program writes.
FIRST_UNKNOWN = _v("4.0.0")
KNOWN_VERSIONS = f"{OLDEST_SUPPORTED} or newer 3.x"


def is_known(version: EtcdVersion) -> bool:
    """A version whose flags and probe paths the tables below describe."""
    return OLDEST_SUPPORTED <= version < FIRST_UNKNOWN


# (first version, first version after) -> skip flag spelling. Source + measured:
# 3.2.28 and 3.3.17 backported the experimental flag; 3.6 accepts both spellings
# but deprecates the experimental one (so we use only the stable one there);
# 3.7 removed every experimental flag.
_SKIP_FLAG_RANGES: tuple[tuple[EtcdVersion, EtcdVersion, str], ...] = (
    (_v("3.2.28"), _v("3.3.0"), EXPERIMENTAL_SKIP_FLAG),
    (_v("3.3.17"), _v("3.6.0"), EXPERIMENTAL_SKIP_FLAG),
    (_v("3.6.0"), FIRST_UNKNOWN, STABLE_SKIP_FLAG),
)


def skip_flag_for(version: EtcdVersion) -> str | None:
    """The spelling of the skip option this etcd accepts, or None if it has none."""
    for first, after, flag in _SKIP_FLAG_RANGES:
        if first <= version < after:
            return flag
    return None


@dataclass(frozen=True)
class ProbePaths:
    readiness: str
    # Must answer while there is no leader: a liveness probe on /health would restart
    # members exactly when quorum is lost.
    liveness: str


_LIVEZ_READYZ = ProbePaths(readiness="/readyz", liveness="/livez")
# /health answers 503 without a leader (readiness only); /metrics answers 200 with or
# without one (measured on 3.4.23 and 3.5.1), so it is the liveness check.
_HEALTH_METRICS = ProbePaths(readiness="/health", liveness="/metrics")

# (first version, first version after) -> probe paths. /livez and /readyz were added in
# 3.4.29, 3.5.11 and 3.6.0 (source); 3.4.23 and 3.5.1 answer 404 (measured).
_PROBE_PATH_RANGES: tuple[tuple[EtcdVersion, EtcdVersion, ProbePaths], ...] = (
    (_v("3.4.0"), _v("3.4.29"), _HEALTH_METRICS),
    (_v("3.4.29"), _v("3.5.0"), _LIVEZ_READYZ),
    (_v("3.5.0"), _v("3.5.11"), _HEALTH_METRICS),
    (_v("3.5.11"), FIRST_UNKNOWN, _LIVEZ_READYZ),
)


def probe_paths_for(version: EtcdVersion) -> ProbePaths:
    for first, after, paths in _PROBE_PATH_RANGES:
        if first <= version < after:
            return paths
    # A version the program does not know (settings refuse it): the paths that need the least.
    return _HEALTH_METRICS
