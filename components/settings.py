"""The stack's configuration as one typed, validated value.

Every key the program reads is declared once in `CONFIG_KEYS` (type, default,
description). `Pulumi.yaml` mirrors that table so the CLI validates too; a test keeps
the two equal. `parse_settings` turns raw values into `Settings` or raises one
`SettingsError` naming the key, the value given and what is allowed, before any
resource is declared.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from .versions import KNOWN_VERSIONS, EtcdVersion, is_known, skip_flag_for, version_from_image

PROJECT = "etcd-peer-san"
DEFAULT_IMAGE = "gcr.io/etcd-development/etcd:v3.6.16"
# `auto`: pin the members' shared peer CN exactly when the SAN check is skipped.
AUTO = "auto"

ConfigType = Literal["boolean", "integer", "string"]


@dataclass(frozen=True)
class ConfigKey:
    name: str
    type: ConfigType
    default: bool | int | str
    description: str


CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "skipClientSanVerification",
        "boolean",
        False,
        "Add etcd's peer skip-client-SAN-verification flag to every member.",
    ),
    ConfigKey("image", "string", DEFAULT_IMAGE, "etcd container image (pinned tag)."),
    ConfigKey(
        "etcdVersion",
        "string",
        "",
        "etcd version of the image; empty: read it from the image tag.",
    ),
    ConfigKey("members", "integer", 3, "Number of etcd members (1-9, odd is best)."),
    ConfigKey("namespace", "string", "default", "Kubernetes namespace for every object."),
    ConfigKey(
        "clusterDomain",
        "string",
        "cluster.local",
        "Cluster DNS domain used in member URLs and certificate SANs.",
    ),
    ConfigKey(
        "peerCertAllowedCn",
        "string",
        AUTO,
        "Common name a peer certificate must carry (--peer-cert-allowed-cn). "
        "'auto': the members' shared peer CN when the SAN check is skipped, off otherwise; "
        "empty: off; any other value (1-64 printable characters, no commas, no surrounding "
        "whitespace): the CN of every member's peer certificate and the pin.",
    ),
)
KEYS_BY_NAME = {key.name: key for key in CONFIG_KEYS}

MIN_MEMBERS, MAX_MEMBERS = 1, 9
# The longest name derived from the stack is the client CA's common name,
# "etcd-<stack> client CA" (etcd_cluster.py), and X.509 allows 64 characters.
MAX_STACK_NAME = 64 - len("etcd- client CA")
# Used with fullmatch: `$` would also match before a trailing newline.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# An image reference: a lower-case repository (optionally after a registry host:port), an
# optional tag (letters of either case, digits, '_', '.', '-'; at most 128) and an
# optional digest (the OCI distribution reference grammar, simplified).
_IMAGE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
# X.509's upper bound for a common name (ub-common-name, RFC 5280).
MAX_COMMON_NAME = 64
# RFC 1123: a DNS name has at most 253 characters, each label at most 63.
MAX_DNS_NAME = 253
# Shown instead of a value set with `pulumi config set --secret`.
REDACTED = "[secret]"


class SettingsError(ValueError):
    """Invalid stack configuration: one message naming key, value and what is allowed."""

    def __init__(
        self, key: str, value: object, allowed: str, hint: str = "", *, secret: bool = False
    ) -> None:
        # A secret value is never kept, not even on the exception.
        self.key, self.value, self.allowed = key, REDACTED if secret else value, allowed
        where = key if key.startswith("stack") else f"{PROJECT}:{key}"
        message = f"invalid configuration {where} = {REDACTED if secret else repr(value)}: {allowed}"
        super().__init__(message + (f" ({hint})" if hint else ""))


@dataclass(frozen=True)
class Settings:
    stack: str
    skip_client_san_verification: bool
    image: str
    etcd_version: EtcdVersion
    members: int
    namespace: str
    cluster_domain: str
    # None: no --peer-cert-allowed-cn.
    peer_cert_allowed_cn: str | None
    # The CN every member's peer certificate shares; equal to the pin whenever one is set.
    peer_common_name: str

    @property
    def cluster_name(self) -> str:
        """Prefix of every Kubernetes object name; per stack so stacks can coexist."""
        return f"etcd-{self.stack}"


@dataclass(frozen=True)
class ParsedSettings:
    settings: Settings
    warnings: tuple[str, ...]


def _is_dns_label(text: str) -> bool:
    return len(text) <= 63 and bool(_DNS_LABEL.fullmatch(text))


def _is_common_name(text: str) -> bool:
    """Usable as the members' peer CN and as etcd's pin.

    No comma: etcd 3.6+ reads --peer-cert-allowed-cn as a comma-separated list, so a CN
    with a comma would pin its pieces and refuse the members' own certificates. UTF-8:
    a lone surrogate cannot be sent to Pulumi's engine at all. Printable: a control or
    zero-width character makes a CN that looks like another. No surrounding whitespace:
    a typo that would otherwise become part of the CN.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return (
        0 < len(text) <= MAX_COMMON_NAME and "," not in text and text.isprintable() and text == text.strip()
    )


def default_peer_common_name(stack: str) -> str:
    return f"etcd-{stack}-peer"


def check_unknown_keys(values: Mapping[str, object], secret_keys: Collection[str] = ()) -> None:
    """Reject keys in the project namespace that the program does not read.

    `values` maps full keys (`project:key`) to their values as given; `secret_keys` are
    the full keys set as secrets, whose values are never shown.
    """
    prefix = f"{PROJECT}:"
    for full in sorted(values):
        if not full.startswith(prefix):
            continue
        name = full[len(prefix) :]
        if name in KEYS_BY_NAME:
            continue
        close = difflib.get_close_matches(name, list(KEYS_BY_NAME), n=1, cutoff=0.6)
        lowered = {k.lower(): k for k in KEYS_BY_NAME}
        guess = close[0] if close else lowered.get(name.lower())
        raise SettingsError(
            name,
            values[full],
            "unknown key; known keys: " + ", ".join(KEYS_BY_NAME),
            f"did you mean {guess!r}?" if guess else "",
            secret=full in secret_keys,
        )


NOT_A_SECRET = (
    "must not be a secret: its value is written in plain text into object names, commands and "
    "outputs; set it without --secret"
)


def check_keys(values: Mapping[str, object], secret_keys: Collection[str] = ()) -> None:
    """The keys set for the stack, before any value is read: no unknown key in the project's
    namespace, and none of ours set as a secret (every value ends up in plain text in
    object names, etcd's command line and stack outputs; taking a secret would store it
    unencrypted, silently). `values` and `secret_keys` use full keys (`project:key`)."""
    check_unknown_keys(values, secret_keys)
    for key in CONFIG_KEYS:
        if f"{PROJECT}:{key.name}" in secret_keys:
            raise SettingsError(key.name, REDACTED, NOT_A_SECRET, secret=True)


# The strings each type accepts: what the Pulumi CLI accepts for a key declared with that
# type in Pulumi.yaml (booleans: exactly "true"/"false"; integers: Go's strconv.Atoi, an
# optional sign and ASCII digits), which the SDK's typed getters also read. So the
# program, `pulumi up`'s own check and the lab agree (" 3", "٣", "True" are refused).
BOOLEAN_STRINGS = {"true": True, "false": False}
_INTEGER_STRING = re.compile(r"[+-]?[0-9]+")


def coerce(key: ConfigKey, raw: object) -> bool | int | str:
    """Turn a raw value (a string, as the CLI passes it, or a typed value) into key.type."""
    if key.type == "boolean":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw in BOOLEAN_STRINGS:
            return BOOLEAN_STRINGS[raw]
        raise SettingsError(key.name, raw, "must be a boolean: true or false")
    if key.type == "integer":
        if isinstance(raw, bool):
            raise SettingsError(key.name, raw, f"must be an integer {MIN_MEMBERS}..{MAX_MEMBERS}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str) and _INTEGER_STRING.fullmatch(raw):
            return int(raw)
        raise SettingsError(key.name, raw, f"must be an integer {MIN_MEMBERS}..{MAX_MEMBERS}")
    if not isinstance(raw, str):
        raise SettingsError(key.name, raw, "must be a string")
    return raw


def parse_settings(raw: Mapping[str, object], stack: str) -> ParsedSettings:
    """Validate raw config values (missing keys take their defaults) into Settings.

    Values set as secrets never get here (`pulumi_config.read_settings` refuses them):
    every value below may be shown in an error and written into names and commands.
    """
    values = {
        key.name: coerce(key, raw[key.name]) if raw.get(key.name) is not None else key.default
        for key in CONFIG_KEYS
    }
    warnings: list[str] = []

    if len(stack) > MAX_STACK_NAME or not _is_dns_label(f"etcd-{stack}-{MAX_MEMBERS - 1}"):
        raise SettingsError(
            "stack name",
            stack,
            f"must be lower-case letters, digits and '-' (at most {MAX_STACK_NAME} characters), "
            "because member names are etcd-<stack>-<i> DNS-1123 labels",
        )

    skip = bool(values["skipClientSanVerification"])
    members = int(values["members"])
    if not MIN_MEMBERS <= members <= MAX_MEMBERS:
        raise SettingsError("members", members, f"must be {MIN_MEMBERS}..{MAX_MEMBERS}")
    if members == 1:
        warnings.append(
            "members = 1: a single member never opens a peer connection, so the SAN check cannot show"
        )
    elif members % 2 == 0:
        warnings.append(f"members = {members}: an even count tolerates no more failures than {members - 1}")

    namespace = str(values["namespace"])
    if not _is_dns_label(namespace):
        raise SettingsError(
            "namespace", namespace, "must be a DNS-1123 label: lower-case letters, digits, '-', at most 63"
        )
    domain = str(values["clusterDomain"])
    if not _DNS_SUBDOMAIN.fullmatch(domain) or not all(_is_dns_label(label) for label in domain.split(".")):
        raise SettingsError(
            "clusterDomain",
            domain,
            "must be a DNS-1123 subdomain such as cluster.local (labels of lower-case letters, "
            "digits and '-', each at most 63 characters)",
        )
    # The longest name in the member URLs and SANs: <member>.<namespace>.svc.<clusterDomain>
    # (cluster_plan.Member.service_fqdn, member names etcd-<stack>-<i>, one digit).
    fqdn_prefix = len(f"etcd-{stack}-{members - 1}.{namespace}.svc.")
    if fqdn_prefix + len(domain) > MAX_DNS_NAME:
        raise SettingsError(
            "clusterDomain",
            domain,
            f"member Service FQDNs (<member>.<namespace>.svc.<clusterDomain>) must be at most "
            f"{MAX_DNS_NAME} characters; the longest would have {fqdn_prefix + len(domain)}, so "
            f"clusterDomain may have at most {MAX_DNS_NAME - fqdn_prefix} characters with this "
            "stack and namespace",
        )

    image = str(values["image"])
    if not _IMAGE.fullmatch(image):
        raise SettingsError("image", image, "must be an image reference such as " + DEFAULT_IMAGE)
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if "@" not in image and tag in ("", "latest"):
        raise SettingsError("image", image, "must carry a pinned tag or digest, not 'latest' or none")

    # The version comes from etcdVersion when given, else from the image tag; errors about
    # the version name that key.
    # Only exactly "" means "from the tag": anything else must be a version as it stands.
    version_text = str(values["etcdVersion"])
    from_tag = version_from_image(image)
    version_key: str
    version_value: str
    if version_text:
        try:
            version = EtcdVersion.parse(version_text)
        except ValueError:
            raise SettingsError(
                "etcdVersion", version_text, "must be an etcd version such as 3.6.16"
            ) from None
        if from_tag is not None and from_tag != version:
            # Flags follow etcdVersion: a different etcd in the image would refuse them.
            raise SettingsError(
                "etcdVersion",
                version_text,
                f"must match the version the image tag names ({from_tag}, from {image}), or be empty",
            )
        version_key, version_value = "etcdVersion", version_text
    else:
        if from_tag is None:
            raise SettingsError(
                "image", image, "its tag names no etcd version (e.g. ':v3.6.16'); set etcdVersion too"
            )
        version = from_tag
        version_key, version_value = "image", image
    known = f"must be {KNOWN_VERSIONS} (the etcd versions this program knows)"
    if version_key == "image":
        known = f"its tag names etcd {version}; etcd {known}"
    # Another major version first: its flags are unknown, the skip check would only guess.
    if version.major != 3:
        raise SettingsError(version_key, version_value, known)
    # Then the skip check: for an old etcd 3 with skip on, the missing option is the news.
    if skip and skip_flag_for(version) is None:
        raise SettingsError(
            "skipClientSanVerification",
            True,
            f"etcd {version} (from {version_key}) has no peer skip-client-SAN option (3.2.28+, 3.3.17+, "
            "3.4+ have it); use a newer etcd, or set it false",
        )
    if not is_known(version):
        raise SettingsError(version_key, version_value, known)

    # One CN for the members' peer certificates and the pin, so the two always agree.
    cn_value = str(values["peerCertAllowedCn"])
    peer_cn = default_peer_common_name(stack)
    allowed_cn: str | None
    if cn_value == AUTO:
        allowed_cn = peer_cn if skip else None
    elif cn_value == "":  # exactly: all-spaces is no way to turn the pin off
        allowed_cn = None
    elif not _is_common_name(cn_value):
        raise SettingsError(
            "peerCertAllowedCn",
            cn_value,
            f"must be 'auto', empty (no pin), or a common name of 1-{MAX_COMMON_NAME} printable "
            "characters (valid UTF-8, no control or invisible characters) without commas or "
            "surrounding whitespace",
        )
    else:
        allowed_cn = peer_cn = cn_value

    settings = Settings(
        stack=stack,
        skip_client_san_verification=skip,
        image=image,
        etcd_version=version,
        members=members,
        namespace=namespace,
        cluster_domain=domain,
        peer_cert_allowed_cn=allowed_cn,
        peer_common_name=peer_cn,
    )
    return ParsedSettings(settings, tuple(warnings))
