"""The version table: how etcd spells the skip flag and which probe paths it serves."""

from __future__ import annotations

import pytest

from components.versions import (
    EXPERIMENTAL_SKIP_FLAG,
    STABLE_SKIP_FLAG,
    EtcdVersion,
    ProbePaths,
    is_known,
    probe_paths_for,
    skip_flag_for,
    version_from_image,
)

EXPERIMENTAL = "--experimental-peer-skip-client-san-verification"
STABLE = "--peer-skip-client-san-verification"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_flag_spellings_are_etcds():
    # Spelled out here, not only imported: a typo in the constant must fail a test.
    assert EXPERIMENTAL_SKIP_FLAG == EXPERIMENTAL
    assert STABLE_SKIP_FLAG == STABLE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.5.1", (3, 5, 1)),
        ("v3.6.16", (3, 6, 16)),
        ("3.6.0-rc.1", (3, 6, 0)),
        ("3.5.12-0", (3, 5, 12)),
        ("3.7.0+build.5", (3, 7, 0)),
        ("10.20.30", (10, 20, 30)),
    ],
)
def test_parse_accepts_release_versions(text, expected):
    assert EtcdVersion.parse(text).key == expected


@pytest.mark.parametrize(
    "text",
    [
        *["", "3", "3.6", "3.x", "3.6.x", "v", "latest", "3.6.16abc", "3.6.1.2", "V3.6.1"],
        # Exactly the text of a version: no padding, no other digits than ASCII ones.
        *[" 3.4.23 ", "3.4.23\n", "\uff13.\uff16.\uff11\uff16", "\u0663.\u0666.\u0661"],
    ],
)
def test_parse_rejects_non_versions(text):
    with pytest.raises(ValueError, match="not an etcd version"):
        EtcdVersion.parse(text)


def test_versions_order_numerically_and_print_plainly():
    ordered = ["3.2.28", "3.3.9", "3.3.17", "3.4.23", "3.4.29", "3.5.1", "3.5.11", "3.6.0", "3.10.0"]
    versions = [EtcdVersion.parse(v) for v in ordered]
    assert sorted(reversed(versions)) == versions
    assert EtcdVersion.parse("v3.6.16") == EtcdVersion(3, 6, 16)
    assert str(EtcdVersion.parse("v3.6.0-rc.1")) == "3.6.0"
    assert EtcdVersion(3, 5, 11) > EtcdVersion(3, 5, 9)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("gcr.io/etcd-development/etcd:v3.6.16", "3.6.16"),
        ("quay.io/coreos/etcd:v3.5.1", "3.5.1"),
        ("registry.k8s.io/etcd:3.5.12-0", "3.5.12"),
        ("etcd:3.4.23", "3.4.23"),
        # A registry with a port: the ':' of the port is not the tag separator.
        ("localhost:5000/etcd:v3.5.1", "3.5.1"),
        ("my.registry:5000/team/etcd:v3.7.0", "3.7.0"),
        ("localhost:5000/etcd", None),
        ("gcr.io/etcd-development/etcd", None),
        ("etcd:latest", None),
        ("etcd:main", None),
        # A bare digest names no version: etcdVersion must say it.
        (f"gcr.io/etcd-development/etcd@{DIGEST}", None),
        (f"localhost:5000/etcd@{DIGEST}", None),
        # A digest after a tag pins that tag's bytes: the tag still names the version.
        (f"gcr.io/etcd-development/etcd:v3.6.16@{DIGEST}", "3.6.16"),
        (f"gcr.io/etcd-development/etcd:v3.7.0@{DIGEST}", "3.7.0"),
        (f"localhost:5000/etcd:v3.5.1@{DIGEST}", "3.5.1"),
        (f"etcd:main@{DIGEST}", None),
    ],
)
def test_version_from_image(image, expected):
    found = version_from_image(image)
    assert (None if found is None else str(found)) == expected


@pytest.mark.parametrize(
    ("version", "flag"),
    [
        ("3.2.0", None),
        ("3.2.27", None),
        ("3.2.28", EXPERIMENTAL),
        ("3.2.32", EXPERIMENTAL),
        ("3.3.0", None),
        ("3.3.16", None),
        ("3.3.17", EXPERIMENTAL),
        ("3.3.27", EXPERIMENTAL),
        ("3.4.0", EXPERIMENTAL),
        ("3.4.23", EXPERIMENTAL),
        ("3.4.37", EXPERIMENTAL),
        ("3.5.0", EXPERIMENTAL),
        ("3.5.1", EXPERIMENTAL),
        ("3.5.21", EXPERIMENTAL),
        # 3.6 accepts both but deprecates the experimental one: only the stable one.
        ("3.6.0-rc.0", STABLE),
        ("3.6.0", STABLE),
        ("3.6.16", STABLE),
        # 3.7 removed every experimental flag.
        ("3.7.0", STABLE),
        ("3.7.5", STABLE),
        # Unknown: the program does not guess how another major version spells it.
        ("4.0.0", None),
        ("99.0.0", None),
    ],
)
def test_skip_flag_for(version, flag):
    assert skip_flag_for(EtcdVersion.parse(version)) == flag


@pytest.mark.parametrize(
    ("version", "readiness", "liveness"),
    [
        # /livez and /readyz arrived in 3.4.29, 3.5.11 and 3.6.0. Before that, /health
        # answers 503 without a leader, so it is readiness only, and liveness asks
        # /metrics, which answers 200 with or without one.
        ("3.4.0", "/health", "/metrics"),
        ("3.4.23", "/health", "/metrics"),
        ("3.4.28", "/health", "/metrics"),
        ("3.4.29", "/readyz", "/livez"),
        ("3.4.37", "/readyz", "/livez"),
        ("3.5.0", "/health", "/metrics"),
        ("3.5.1", "/health", "/metrics"),
        ("3.5.10", "/health", "/metrics"),
        ("3.5.11", "/readyz", "/livez"),
        ("3.5.21", "/readyz", "/livez"),
        ("3.6.0-rc.0", "/readyz", "/livez"),
        ("3.6.0", "/readyz", "/livez"),
        ("3.6.16", "/readyz", "/livez"),
        ("3.7.0", "/readyz", "/livez"),
        ("3.7.5", "/readyz", "/livez"),
    ],
)
def test_probe_paths_for(version, readiness, liveness):
    assert probe_paths_for(EtcdVersion.parse(version)) == ProbePaths(readiness=readiness, liveness=liveness)


@pytest.mark.parametrize(
    ("version", "known"),
    [
        ("2.3.8", False),
        ("3.3.27", False),
        ("3.4.0", True),
        ("3.6.16", True),
        ("3.99.0", True),
        ("4.0.0-rc.0", False),
        ("4.0.0", False),
        ("99.0.0", False),
    ],
)
def test_known_versions_are_etcd_3_from_3_4(version, known):
    assert is_known(EtcdVersion.parse(version)) is known
