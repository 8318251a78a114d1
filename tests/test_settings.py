"""Bad configurations fail before anything is declared, with one error that says why.

Every case runs the WHOLE program (`__main__.py` under mocks) with CLI-style string
values, so typed getters, unknown-key checks and `parse_settings` are all exercised.
"""

from __future__ import annotations

import contextvars
from pathlib import Path

import pulumi
import pytest
from pulumi.runtime import config as runtime_config

from components import cluster_plan as plan
from components.pulumi_config import read_settings
from components.settings import (
    CONFIG_KEYS,
    DEFAULT_IMAGE,
    MAX_STACK_NAME,
    PROJECT,
    ParsedSettings,
    SettingsError,
    parse_settings,
)
from lab.program import partial_run, run_program
from lab.run import given_config
from tests.conftest import settings_of

DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = "gcr.io/etcd-development/etcd"
KNOWN_KEYS = (
    "skipClientSanVerification, image, etcdVersion, members, namespace, clusterDomain, peerCertAllowedCn"
)


def config(**values: str) -> dict[str, str]:
    return {f"{PROJECT}:{key}": value for key, value in values.items()}


def domain_of(length: int) -> str:
    """A valid cluster domain of exactly `length` characters (labels of at most 63)."""
    labels, left = [], length
    while left > 64:
        labels.append("d" * 63)
        left -= 64
    return ".".join([*labels, "d" * left])


# The longest member Service FQDN of stack `skip` with 3 members in `default`:
# "etcd-skip-2.default.svc." is 24 characters, so 229 are left for clusterDomain.
LONGEST_DOMAIN = domain_of(229)


CN_ALLOWED = (
    "must be 'auto', empty (no pin), or a common name of 1-64 printable characters (valid UTF-8, "
    "no control or invisible characters) without commas or surrounding whitespace"
)

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
    (
        "domain-label-64",
        "skip",
        config(clusterDomain="a" * 64 + ".local"),
        "clusterDomain",
        repr("a" * 64 + ".local"),
        "each at most 63 characters",
    ),
    (
        "domain-only-label-64",
        "skip",
        config(clusterDomain="a" * 64),
        "clusterDomain",
        repr("a" * 64),
        "each at most 63 characters",
    ),
    (
        "domain-fqdn-254",
        "skip",
        config(clusterDomain=domain_of(230)),
        "clusterDomain",
        repr(domain_of(230)),
        "must be at most 253 characters; the longest would have 254, "
        "so clusterDomain may have at most 229 characters",
    ),
    (
        "domain-fqdn-long-namespace",
        "noskip",
        config(members="9", namespace="n" * 63, clusterDomain=domain_of(175)),
        "clusterDomain",
        repr(domain_of(175)),
        # "etcd-noskip-8." + 63 + ".svc." = 82 characters before the domain.
        "the longest would have 257, so clusterDomain may have at most 171 characters",
    ),
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
        "etcd 3.3.10 (from etcdVersion) has no peer skip-client-SAN option",
    ),
    (
        "version-3.2-tag-with-skip",
        "skip",
        config(image=f"{IMAGE}:v3.2.0", skipClientSanVerification="true"),
        "skipClientSanVerification",
        "True",
        "etcd 3.2.0 (from image) has no peer skip-client-SAN option",
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
        "version-contradicts-tag-before-digest",
        "skip",
        config(image=f"{IMAGE}:v3.7.0@{DIGEST}", etcdVersion="3.5.1"),
        "etcdVersion",
        "'3.5.1'",
        f"must match the version the image tag names (3.7.0, from {IMAGE}:v3.7.0@{DIGEST}), or be empty",
    ),
    (
        "digest-after-unversioned-tag",
        "skip",
        config(image=f"{IMAGE}:latest@{DIGEST}"),
        "image",
        repr(f"{IMAGE}:latest@{DIGEST}"),
        "set etcdVersion",
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
        "version-3.2-as-given",
        "noskip",
        config(image=f"{IMAGE}:custom", etcdVersion="v3.2.0"),
        "etcdVersion",
        "'v3.2.0'",
        "must be 3.4.0 or newer",
    ),
    # etcd 3 only: another major version may spell or drop any flag the program writes.
    *(
        (
            f"version-{version}",
            stack,
            config(image=f"{IMAGE}:custom", etcdVersion=version),
            "etcdVersion",
            repr(version),
            "must be 3.4.0 or newer 3.x (the etcd versions this program knows)",
        )
        for version, stack in [
            ("99.0.0", "skip"),
            ("4.0.0", "noskip"),
            ("v4.0.0-rc.0", "skip"),
            ("2.3.8", "noskip"),
        ]
    ),
    *(
        (
            f"version-{name}-tag",
            stack,
            config(image=image),
            "image",
            repr(image),
            f"its tag names etcd {version}; etcd must be 3.4.0 or newer 3.x "
            "(the etcd versions this program knows)",
        )
        for name, image, version, stack in [
            ("99", f"{IMAGE}:v99.0.0", "99.0.0", "skip"),
            ("4", f"{IMAGE}:v4.0.0", "4.0.0", "noskip"),
            ("4-before-digest", f"{IMAGE}:v4.1.2@{DIGEST}", "4.1.2", "skip"),
        ]
    ),
    # A version read from the tag is the image's fault: the error names `image`.
    (
        "version-3.3-tag",
        "noskip",
        config(image=f"{IMAGE}:v3.3.27"),
        "image",
        repr(f"{IMAGE}:v3.3.27"),
        "its tag names etcd 3.3.27; etcd must be 3.4.0 or newer",
    ),
    (
        "version-3.3-tag-with-skip",
        "skip",
        config(image=f"{IMAGE}:v3.3.27", skipClientSanVerification="true"),
        "image",
        repr(f"{IMAGE}:v3.3.27"),
        "its tag names etcd 3.3.27; etcd must be 3.4.0 or newer",
    ),
    (
        "version-3.3-tag-before-digest",
        "noskip",
        config(image=f"{IMAGE}:v3.3.27@{DIGEST}"),
        "image",
        repr(f"{IMAGE}:v3.3.27@{DIGEST}"),
        "its tag names etcd 3.3.27; etcd must be 3.4.0 or newer",
    ),
    (
        "cn-65",
        "skip",
        config(peerCertAllowedCn="c" * 65),
        "peerCertAllowedCn",
        repr("c" * 65),
        CN_ALLOWED,
    ),
    # etcd 3.6+ splits the flag's value at commas: the members' own CN would miss the pin.
    ("cn-comma", "skip", config(peerCertAllowedCn="etcd, inc"), "peerCertAllowedCn", "'etcd, inc'", "commas"),
    (
        "cn-tab",
        "skip",
        config(peerCertAllowedCn="etcd\tpeer"),
        "peerCertAllowedCn",
        "'etcd\\tpeer'",
        "control",
    ),
    (
        "cn-newline",
        "noskip",
        config(peerCertAllowedCn="etcd\npeer"),
        "peerCertAllowedCn",
        "'etcd\\npeer'",
        "no control or invisible characters",
    ),
    ("cn-del", "skip", config(peerCertAllowedCn="peer\x7f"), "peerCertAllowedCn", "'peer\\x7f'", "control"),
    # Only exactly "" turns the pin off; spaces around a CN are a typo, not part of it.
    ("cn-spaces", "skip", config(peerCertAllowedCn="   "), "peerCertAllowedCn", "'   '", CN_ALLOWED),
    ("cn-auto-padded", "skip", config(peerCertAllowedCn="auto "), "peerCertAllowedCn", "'auto '", CN_ALLOWED),
    (
        "cn-leading-space",
        "skip",
        config(peerCertAllowedCn=" etcd-peer"),
        "peerCertAllowedCn",
        "' etcd-peer'",
        "surrounding whitespace",
    ),
    (
        "cn-trailing-newline",
        "skip",
        config(peerCertAllowedCn="etcd-peer\n"),
        "peerCertAllowedCn",
        "'etcd-peer\\n'",
        CN_ALLOWED,
    ),
    (
        "cn-no-break-space",
        "skip",
        config(peerCertAllowedCn="etcd-peer\xa0"),
        "peerCertAllowedCn",
        "'etcd-peer\\xa0'",
        "printable",
    ),
    (
        "cn-zero-width-space",
        "skip",
        config(peerCertAllowedCn="etcd\u200bpeer"),
        "peerCertAllowedCn",
        "'etcd\\u200bpeer'",
        "invisible",
    ),
    # A lone surrogate cannot be encoded: it used to fail only after resources were declared.
    ("cn-surrogate", "skip", config(peerCertAllowedCn="\ud800"), "peerCertAllowedCn", "'\\ud800'", "UTF-8"),
    (
        "cn-surrogate-inside",
        "noskip",
        config(peerCertAllowedCn="etcd-\udcffpeer"),
        "peerCertAllowedCn",
        "'etcd-\\udcffpeer'",
        CN_ALLOWED,
    ),
    # The same classes for the other string keys: nothing is stripped or cut off silently.
    *(
        (f"image-{name}", "skip", config(image=image), "image", repr(image), "must be an image reference")
        for name, image in [
            ("leading-space", " " + DEFAULT_IMAGE),
            ("trailing-space", DEFAULT_IMAGE + " "),
            ("trailing-newline", DEFAULT_IMAGE + "\n"),
            ("no-break-space", DEFAULT_IMAGE + "\xa0"),
            ("surrogate", DEFAULT_IMAGE + "\ud800"),
        ]
    ),
    *(
        (
            f"namespace-{name}",
            "skip",
            config(namespace=namespace),
            "namespace",
            repr(namespace),
            "DNS-1123 label",
        )
        for name, namespace in [
            ("trailing-space", "default "),
            ("trailing-newline", "default\n"),
            ("surrogate", "\ud800"),
        ]
    ),
    *(
        (f"domain-{name}", "skip", config(clusterDomain=domain), "clusterDomain", repr(domain), "subdomain")
        for name, domain in [
            ("leading-space", " cluster.local"),
            ("trailing-newline", "cluster.local\n"),
            ("surrogate", "cluster.local\ud800"),
        ]
    ),
    *(
        (
            f"version-{name}",
            "skip",
            config(etcdVersion=version),
            "etcdVersion",
            repr(version),
            "such as 3.6.16",
        )
        for name, version in [
            # Not "empty": only exactly "" reads the version from the image tag.
            ("spaces", "   "),
            ("padded", " 3.6.16 "),
            ("trailing-newline", "3.6.16\n"),
            ("no-break-space", "3.6.16\xa0"),
            ("fullwidth-digits", "\uff13.\uff16.\uff11\uff16"),
            ("surrogate", "3.6.16\ud800"),
        ]
    ),
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
    assert_cli_sees_one_line(caught.value)
    run = partial_run(caught.value)
    assert run is not None
    assert run.resources == []


def assert_cli_sees_one_line(error: SettingsError) -> None:
    """The program raised a pulumi.RunError with the SettingsError's text (the Pulumi CLI
    prints a RunError as its message alone, anything else as a traceback); run_program
    hands back the SettingsError behind it, chained from what the program raised."""
    raised = error.__cause__
    assert type(raised) is pulumi.RunError
    assert str(raised) == str(error)
    assert "\n" not in str(raised)
    # `from None`: nothing chained would be shown.
    assert raised.__cause__ is None and raised.__suppress_context__


def test_bad_value_reaches_the_cli_as_one_line_and_declares_nothing():
    with pytest.raises(SettingsError) as caught:
        run_program("skip", config=config(members="ten"))
    raised = caught.value.__cause__
    assert type(raised) is pulumi.RunError
    assert str(raised) == "invalid configuration etcd-peer-san:members = 'ten': must be an integer 1..9"
    assert raised.__suppress_context__
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
    assert_cli_sees_one_line(caught.value)
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
        # Tag and digest: the tag names the version, etcdVersion may repeat it.
        (
            config(image=f"{IMAGE}:v3.7.0@{DIGEST}"),
            f"{IMAGE}:v3.7.0@{DIGEST}",
            "--peer-skip-client-san-verification=true",
        ),
        (
            config(image=f"{IMAGE}:v3.5.1@{DIGEST}"),
            f"{IMAGE}:v3.5.1@{DIGEST}",
            "--experimental-peer-skip-client-san-verification=true",
        ),
        (
            config(image=f"{IMAGE}:v3.5.1@{DIGEST}", etcdVersion="3.5.1"),
            f"{IMAGE}:v3.5.1@{DIGEST}",
            "--experimental-peer-skip-client-san-verification=true",
        ),
        # Tags may use upper case (repositories may not).
        (
            config(image=f"{IMAGE}:V3.6.16-RC_1", etcdVersion="3.6.16"),
            f"{IMAGE}:V3.6.16-RC_1",
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


def test_longest_member_fqdn_may_have_253_characters():
    settings = parse_settings({"clusterDomain": LONGEST_DOMAIN}, "skip").settings
    fqdns = [member.service_fqdn for member in plan.members_of(settings)]
    assert max(len(fqdn) for fqdn in fqdns) == len(fqdns[-1]) == 253
    # One character more in the domain, the namespace or the stack name is too many.
    for raw, stack in [
        ({"clusterDomain": LONGEST_DOMAIN + "d"}, "skip"),
        ({"clusterDomain": LONGEST_DOMAIN, "namespace": "defaults"}, "skip"),
        ({"clusterDomain": LONGEST_DOMAIN}, "skipp"),
    ]:
        with pytest.raises(SettingsError, match="the longest would have 254") as caught:
            parse_settings(raw, stack)
        assert caught.value.key == "clusterDomain"


@pytest.mark.parametrize("cn", ["foo", "AUTO", "Auto", "bad/cn", "-cn", "etcd peer", "c" * 64, "pér"])
@pytest.mark.parametrize("skip", [True, False])
def test_a_custom_peer_cn_is_the_members_cn_and_the_pin(cn, skip):
    settings = parse_settings({"skipClientSanVerification": skip, "peerCertAllowedCn": cn}, "dev").settings
    assert settings.peer_common_name == cn
    assert settings.peer_cert_allowed_cn == cn


@pytest.mark.parametrize(
    ("cn", "skip", "pin"),
    [("auto", True, "etcd-dev-peer"), ("auto", False, None), ("", True, None), ("", False, None)],
)
def test_auto_and_empty_keep_the_shared_default_cn(cn, skip, pin):
    settings = parse_settings({"skipClientSanVerification": skip, "peerCertAllowedCn": cn}, "dev").settings
    assert settings.peer_common_name == "etcd-dev-peer"
    assert settings.peer_cert_allowed_cn == pin


def read_with_secrets(values: dict[str, str], secret_keys: list[str], stack: str = "skip") -> ParsedSettings:
    """The program's settings entry point, with config as the language host sets it for
    values given with `pulumi config set --secret` (set_all_config with the secret keys)."""

    def read() -> ParsedSettings:
        runtime_config.set_all_config(values, secret_keys)
        return read_settings(pulumi.Config(PROJECT), stack)

    # A fresh context: Pulumi keeps config and secret keys in context variables.
    return contextvars.Context().run(read)


NOT_A_SECRET = (
    "must not be a secret: its value is written in plain text into object names, commands and "
    "outputs; set it without --secret"
)
# A valid value for every key, as the CLI passes it.
GOOD = {
    "skipClientSanVerification": "true",
    "image": DEFAULT_IMAGE,
    "etcdVersion": "3.6.16",
    "members": "5",
    "namespace": "etcd-ns",
    "clusterDomain": "cluster.local",
    "peerCertAllowedCn": "etcd-skip-peer",
}


def test_every_key_has_a_good_value():
    assert list(GOOD) == [key.name for key in CONFIG_KEYS]


@pytest.mark.parametrize("key", list(GOOD))
def test_secret_values_of_known_keys_are_rejected_before_anything_is_declared(key):
    raw = {**config(skipClientSanVerification="true"), **config(**{key: GOOD[key]})}
    with pytest.raises(SettingsError) as caught:
        run_program("skip", config=raw, secret_keys=[f"{PROJECT}:{key}"])
    assert str(caught.value) == f"invalid configuration {PROJECT}:{key} = [secret]: {NOT_A_SECRET}"
    assert caught.value.key == key
    assert caught.value.value == "[secret]"
    assert_cli_sees_one_line(caught.value)
    run = partial_run(caught.value)
    assert run is not None
    assert run.resources == []
    # The same value, not secret, is used: the secrecy is what is refused.
    assert read_with_secrets(raw, []).settings.skip_client_san_verification is True


def test_the_first_secret_key_is_named():
    raw = config(members="3", namespace="default")
    with pytest.raises(SettingsError) as caught:
        read_with_secrets(raw, list(raw))
    assert caught.value.key == "members"


# (id, config, the secret value, key named, text that must not leak besides the value)
SECRET_BAD = [
    ("members-word", config(members="hunter2"), "hunter2", "members", None),
    ("members-range", config(members="42"), "42", "members", None),
    ("skip-word", config(skipClientSanVerification="hunter2"), "hunter2", "skipClientSanVerification", None),
    ("namespace", config(namespace="Hunter2"), "Hunter2", "namespace", None),
    ("domain", config(clusterDomain="hunter2..corp"), "hunter2..corp", "clusterDomain", None),
    ("image", config(image="registry.corp/hunter2"), "registry.corp/hunter2", "image", None),
    (
        "image-version",
        config(image=f"{IMAGE}:v3.3.27-hunter2"),
        f"{IMAGE}:v3.3.27-hunter2",
        "image",
        "3.3.27",
    ),
    ("version", config(etcdVersion="hunter2"), "hunter2", "etcdVersion", None),
    ("version-old", config(etcdVersion="3.2.99"), "3.2.99", "etcdVersion", "3.2.99"),
    ("cn", config(peerCertAllowedCn="hunter2" * 10), "hunter2" * 10, "peerCertAllowedCn", None),
    ("unknown-key", config(passwrod="hunter2"), "hunter2", "passwrod", None),
]


@pytest.mark.parametrize(
    ("raw", "value", "key", "derived"), [c[1:] for c in SECRET_BAD], ids=[c[0] for c in SECRET_BAD]
)
def test_secret_values_are_never_shown(raw, value, key, derived):
    with pytest.raises(SettingsError) as caught:
        read_with_secrets(raw, list(raw))
    message = str(caught.value)
    assert message.startswith(f"invalid configuration {PROJECT}:{key} = [secret]: ")
    assert value not in message
    assert "hunter2" not in message.lower()
    if derived is not None:
        assert derived not in message
    assert caught.value.key == key
    assert caught.value.value == "[secret]"
    # The same input, not secret, is shown: the redaction is what hides it.
    with pytest.raises(SettingsError) as shown:
        read_with_secrets(raw, [])
    assert value in str(shown.value)


def test_a_secret_key_is_refused_before_other_keys_could_describe_it():
    # etcdVersion is not secret, the image is: the refusal names the image, not its tag.
    raw = config(image=f"{IMAGE}:v3.7.0-hunter2", etcdVersion="3.5.1")
    with pytest.raises(SettingsError) as caught:
        read_with_secrets(raw, [f"{PROJECT}:image"])
    assert str(caught.value) == f"invalid configuration {PROJECT}:image = [secret]: {NOT_A_SECRET}"


def test_defaults_when_nothing_is_set():
    settings = parse_settings({}, "dev").settings
    assert settings.skip_client_san_verification is False
    assert settings.image == DEFAULT_IMAGE == "gcr.io/etcd-development/etcd:v3.6.16"
    assert str(settings.etcd_version) == "3.6.16"
    assert settings.members == 3
    assert settings.namespace == "default"
    assert settings.cluster_domain == "cluster.local"
    assert settings.peer_cert_allowed_cn is None
    assert settings.peer_common_name == "etcd-dev-peer"
    assert (
        parse_settings({"skipClientSanVerification": True}, "dev").settings.peer_cert_allowed_cn
        == "etcd-dev-peer"
    )


def test_typed_values_are_accepted_as_well_as_cli_strings():
    typed = parse_settings({"members": 5, "skipClientSanVerification": True}, "dev").settings
    strings = parse_settings({"members": "5", "skipClientSanVerification": "true"}, "dev").settings
    assert typed == strings
    assert typed.members == 5


# The strings a typed key accepts: those the Pulumi CLI accepts for the key's declared
# type, judged alike by the program (settings.coerce before Pulumi's typed getters) and
# the lab's check of a request (lab.run.given_config).
TYPED_STRINGS = [
    ("skipClientSanVerification", "true", True),
    ("skipClientSanVerification", "false", False),
    ("members", "5", 5),
    ("members", "05", 5),
    ("members", "+3", 3),
    *(
        ("skipClientSanVerification", text, None)
        for text in ("True", "FALSE", " true", "true ", "yes", "1", "on", "")
    ),
    *(("members", text, None) for text in ("++3", " 3", "3 ", "0_3", "\u0663", "3.0", "3e0", "")),
]


@pytest.mark.parametrize(("key", "text", "value"), TYPED_STRINGS)
def test_the_program_and_the_lab_accept_the_same_typed_strings(key, text, value):
    config = {f"{PROJECT}:{key}": text}
    if value is None:
        with pytest.raises(SettingsError) as by_program:
            run_program("dev", config=config)
        with pytest.raises(SettingsError) as by_lab:
            given_config("skip", {key: text})
        assert str(by_program.value) == str(by_lab.value)
        assert by_program.value.key == key
    else:
        settings = {
            "skipClientSanVerification": lambda s: s.skip_client_san_verification,
            "members": lambda s: s.members,
        }[key]
        run = run_program("dev", config=config)
        assert run.resources, "nothing declared"
        assert settings(settings_of(run)) == value
        given_config("skip", {key: text})  # no error
