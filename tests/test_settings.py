"""Bad configurations fail before anything is declared, with one error that says why.

Every case runs the WHOLE program (`__main__.py` under mocks) with CLI-style string
values, so typed getters, unknown-key checks and `parse_settings` are all exercised.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.settings import DEFAULT_IMAGE, MAX_STACK_NAME, PROJECT, SettingsError, parse_settings
from lab.program import partial_run, run_program

DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = "gcr.io/etcd-development/etcd"
KNOWN_KEYS = (
    "skipClientSanVerification, image, etcdVersion, members, namespace, clusterDomain, peerCertAllowedCn"
)


def config(**values: str) -> dict[str, str]:
    return {f"{PROJECT}:{key}": value for key, value in values.items()}


# (id, stack, config, key named, value named, allowed values named)
BAD = [
    ("members-word", "skip", config(members="three"), "members", "'three'", "must be an integer 1..9"),
    ("members-fraction", "skip", config(members="2.5"), "members", "'2.5'", "must be an integer 1..9"),
    ("members-empty", "skip", config(members=""), "members", "''", "must be an integer 1..9"),
    ("members-zero", "skip", config(members="0"), "members", "0", "must be 1..9"),
    ("members-ten", "skip", config(members="10"), "members", "10", "must be 1..9"),
    ("members-negative", "skip", config(members="-1"), "members", "-1", "must be 1..9"),
    (
        "skip-yes",
        "skip",
        config(skipClientSanVerification="yes"),
        "skipClientSanVerification",
        "'yes'",
        "must be a boolean: true or false",
    ),
    (
        "skip-one",
        "skip",
        config(skipClientSanVerification="1"),
        "skipClientSanVerification",
        "'1'",
        "must be a boolean: true or false",
    ),
    ("namespace-upper", "skip", config(namespace="Default"), "namespace", "'Default'", "DNS-1123 label"),
    ("namespace-underscore", "skip", config(namespace="a_b"), "namespace", "'a_b'", "DNS-1123 label"),
    ("namespace-64", "skip", config(namespace="a" * 64), "namespace", repr("a" * 64), "at most 63"),
    ("namespace-empty", "skip", config(namespace=""), "namespace", "''", "DNS-1123 label"),
    ("namespace-dot", "skip", config(namespace="a.b"), "namespace", "'a.b'", "DNS-1123 label"),
    ("domain-dash", "skip", config(clusterDomain="-bad"), "clusterDomain", "'-bad'", "DNS-1123 subdomain"),
    (
        "domain-upper",
        "skip",
        config(clusterDomain="Cluster.Local"),
        "clusterDomain",
        "'Cluster.Local'",
        "subdomain",
    ),
    ("domain-dots", "skip", config(clusterDomain="a..b"), "clusterDomain", "'a..b'", "DNS-1123 subdomain"),
    ("image-no-tag", "skip", config(image=IMAGE), "image", repr(IMAGE), "pinned tag or digest"),
    (
        "image-port-no-tag",
        "skip",
        config(image="localhost:5000/etcd"),
        "image",
        "'localhost:5000/etcd'",
        "pinned tag or digest",
    ),
    (
        "image-latest",
        "skip",
        config(image=f"{IMAGE}:latest"),
        "image",
        repr(f"{IMAGE}:latest"),
        "not 'latest'",
    ),
    ("image-upper", "skip", config(image="Etcd:v3.6.16"), "image", "'Etcd:v3.6.16'", "image reference"),
    ("image-empty", "skip", config(image=""), "image", "''", "image reference"),
    (
        "digest-without-version",
        "skip",
        config(image=f"{IMAGE}@{DIGEST}"),
        "image",
        repr(f"{IMAGE}@{DIGEST}"),
        "set etcdVersion",
    ),
    (
        "tag-without-version",
        "skip",
        config(image=f"{IMAGE}:main"),
        "image",
        repr(f"{IMAGE}:main"),
        "set etcdVersion",
    ),
    ("version-x", "skip", config(etcdVersion="3.x"), "etcdVersion", "'3.x'", "such as 3.6.16"),
    ("version-two-parts", "skip", config(etcdVersion="3.6"), "etcdVersion", "'3.6'", "such as 3.6.16"),
    (
        "version-3.3-with-skip",
        "skip",
        config(image=f"{IMAGE}:custom", etcdVersion="3.3.10", skipClientSanVerification="true"),
        "skipClientSanVerification",
        "True",
        "etcd 3.3.10 has no peer skip-client-SAN option",
    ),
    (
        "version-contradicts-tag",
        "skip",
        config(image=f"{IMAGE}:v3.7.0", etcdVersion="3.5.1"),
        "etcdVersion",
        "'3.5.1'",
        "must match the version the image tag names (3.7.0",
    ),
    (
        "version-3.2",
        "noskip",
        config(image=f"{IMAGE}:custom", etcdVersion="3.2.0"),
        "etcdVersion",
        "'3.2.0'",
        "3.4.0 or newer",
    ),
    (
        "version-3.3-tag",
        "noskip",
        config(image=f"{IMAGE}:v3.3.27"),
        "etcdVersion",
        "'3.3.27'",
        "3.4.0 or newer",
    ),
    (
        "cn-slash",
        "skip",
        config(peerCertAllowedCn="bad/cn"),
        "peerCertAllowedCn",
        "'bad/cn'",
        "'auto', empty",
    ),
    (
        "cn-65",
        "skip",
        config(peerCertAllowedCn="c" * 65),
        "peerCertAllowedCn",
        repr("c" * 65),
        "64 characters",
    ),
    ("cn-leading-dash", "skip", config(peerCertAllowedCn="-cn"), "peerCertAllowedCn", "'-cn'", "common name"),
    ("stack-name", "Bad_Stack", {}, "stack name", "'Bad_Stack'", "lower-case letters, digits and '-'"),
    ("stack-name-dot", "a.b", {}, "stack name", "'a.b'", "lower-case letters, digits and '-'"),
    (
        "stack-name-long",
        "s" * (MAX_STACK_NAME + 1),
        {},
        "stack name",
        repr("s" * (MAX_STACK_NAME + 1)),
        "at most 49",
    ),
]

# Unknown keys: the value is not echoed (it may have been set with --secret).
UNKNOWN = [
    ("unknown-key", config(frobnicate="1"), "frobnicate", None),
    (
        "typo-case",
        config(skipClientSANVerification="true"),
        "skipClientSANVerification",
        "skipClientSanVerification",
    ),
    ("typo-singular", config(member="3"), "member", "members"),
    ("typo-letters", config(clusterDomian="cluster.local"), "clusterDomian", "clusterDomain"),
    ("typo-lowercase", config(etcdversion="3.6.16"), "etcdversion", "etcdVersion"),
]


def test_there_are_enough_bad_cases():
    assert len(BAD) + len(UNKNOWN) >= 20
    assert len({case[0] for case in BAD} | {case[0] for case in UNKNOWN}) == len(BAD) + len(UNKNOWN)


@pytest.mark.parametrize(
    ("stack", "raw", "key", "value", "allowed"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_configuration_fails_before_anything_is_declared(stack, raw, key, value, allowed):
    with pytest.raises(SettingsError) as caught:
        run_program(stack, config=raw)
    message = str(caught.value)
    where = key if key == "stack name" else f"{PROJECT}:{key}"
    assert message.startswith(f"invalid configuration {where} = {value}: ")
    assert allowed in message
    assert caught.value.key == key
    run = partial_run(caught.value)
    assert run is not None
    assert run.resources == []


@pytest.mark.parametrize(("raw", "key", "hint"), [c[1:] for c in UNKNOWN], ids=[c[0] for c in UNKNOWN])
def test_unknown_key_fails_with_a_hint(raw, key, hint):
    with pytest.raises(SettingsError) as caught:
        run_program("skip", config={**config(skipClientSanVerification="true"), **raw})
    message = str(caught.value)
    assert f"{PROJECT}:{key}" in message
    # The value given is named too (only an unknown key's own value).
    assert f"= {raw[f'{PROJECT}:{key}']!r}:" in message
    assert f"unknown key; known keys: {KNOWN_KEYS}" in message
    if hint is None:
        assert "did you mean" not in message
    else:
        assert message.endswith(f"(did you mean {hint!r}?)")
    run = partial_run(caught.value)
    assert run is not None
    assert run.resources == []


def test_partial_run_sees_what_a_failing_program_declared(tmp_path: Path):
    # The "nothing declared" checks above would pass vacuously if declarations before
    # a failure were not recorded; they are.
    (tmp_path / "Pulumi.yaml").write_text("name: failing\nruntime: python\n")
    (tmp_path / "__main__.py").write_text(
        "import pulumi\n"
        "pulumi.ComponentResource('test:index:Thing', 'declared-first')\n"
        "raise RuntimeError('failed after declaring')\n"
    )
    with pytest.raises(RuntimeError, match="failed after declaring") as caught:
        run_program("dev", config={}, project_dir=tmp_path)
    run = partial_run(caught.value)
    assert run is not None
    assert [(r.type, r.name) for r in run.resources] == [("test:index:Thing", "declared-first")]


@pytest.mark.parametrize(
    ("raw", "image", "last_arg"),
    [
        (
            config(image=f"{IMAGE}@{DIGEST}", etcdVersion="3.5.21"),
            f"{IMAGE}@{DIGEST}",
            "--experimental-peer-skip-client-san-verification=true",
        ),
        (
            config(image=f"{IMAGE}@{DIGEST}", etcdVersion="v3.7.0"),
            f"{IMAGE}@{DIGEST}",
            "--peer-skip-client-san-verification=true",
        ),
        (
            config(image="localhost:5000/etcd:v3.4.23"),
            "localhost:5000/etcd:v3.4.23",
            "--experimental-peer-skip-client-san-verification=true",
        ),
        (
            config(image=f"{IMAGE}:main", etcdVersion="3.6.16"),
            f"{IMAGE}:main",
            "--peer-skip-client-san-verification=true",
        ),
    ],
)
def test_good_image_and_version_combinations(raw, image, last_arg):
    run = run_program("skip", config={**config(skipClientSanVerification="true"), **raw})
    pods = run.manifests("Pod")
    assert len(pods) == 3
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["image"] == image
        assert container["command"][-1] == last_arg


@pytest.mark.parametrize("stack", ["a", "s" * MAX_STACK_NAME, "dev-2"])
def test_longest_and_shortest_stack_names_work(stack):
    # The longest stack name must still yield valid certificates (CN <= 64 characters).
    run = run_program(stack, config=config(skipClientSanVerification="true"))
    assert len(run.manifests("Pod")) == 3
    assert run.output("expectedOutcome") == "healthy"


def test_other_namespaces_are_not_checked():
    run = run_program("skip", config={**config(members="1"), "kubernetes:context": "kind-kind"})
    assert len(run.manifests("Pod")) == 1
    assert run.warnings == [
        "members = 1: a single member never opens a peer connection, so the SAN check cannot show"
    ]


def test_defaults_when_nothing_is_set():
    settings = parse_settings({}, "dev").settings
    assert settings.skip_client_san_verification is False
    assert settings.image == DEFAULT_IMAGE == "gcr.io/etcd-development/etcd:v3.6.16"
    assert str(settings.etcd_version) == "3.6.16"
    assert settings.members == 3
    assert settings.namespace == "default"
    assert settings.cluster_domain == "cluster.local"
    assert settings.peer_cert_allowed_cn is None
    assert (
        parse_settings({"skipClientSanVerification": True}, "dev").settings.peer_cert_allowed_cn
        == "etcd-dev-peer"
    )


def test_typed_values_are_accepted_as_well_as_cli_strings():
    typed = parse_settings({"members": 5, "skipClientSanVerification": True}, "dev").settings
    strings = parse_settings({"members": "5", "skipClientSanVerification": "true"}, "dev").settings
    assert typed == strings
    assert typed.members == 5
