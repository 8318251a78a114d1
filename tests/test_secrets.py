"""Private keys are secret wherever they flow; nothing exported holds key material."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pulumi.runtime import rpc

from lab.program import ProgramRun

PRIVATE_KEY = "PRIVATE KEY"
PEM_PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----\n?", re.S)


@dataclass(frozen=True)
class Text:
    where: str
    value: str
    secret: bool


def texts(value: Any, where: str, secret: bool = False) -> Iterator[Text]:
    """Every string in `value`, with whether a secret marker encloses it at any depth."""
    if rpc.is_rpc_secret(value):
        yield from texts(rpc.unwrap_rpc_secret(value), where, True)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from texts(item, f"{where}.{key}", secret)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from texts(item, f"{where}[{index}]", secret)
    elif isinstance(value, str):
        yield Text(where, value, secret)


def everything(run: ProgramRun) -> Iterator[Text]:
    """Every captured resource input and output, and every stack output."""
    for resource in run.resources:
        yield from texts(resource.inputs, f"{resource.name}.inputs")
        yield from texts(resource.outputs, f"{resource.name}.outputs")
    for name, output in run.outputs.items():
        yield from texts(output.value, f"output {name}", output.secret)


def key_identity(pem: str) -> bytes:
    """One identity per key, whatever its PEM encoding (SEC1 or PKCS#8)."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def keys_in(found: Iterator[Text]) -> set[bytes]:
    return {key_identity(m.group(0)) for text in found for m in PEM_PRIVATE_KEY.finditer(text.value)}


def generated_keys(run: ProgramRun) -> dict[str, bytes]:
    """PrivateKey resource name -> its key's identity."""
    return {
        r.name: key_identity(r.plain_outputs["privateKeyPem"])
        for r in run.of_type("tls:index/privateKey:PrivateKey")
    }


def encoded_copies(pem: str) -> dict[str, str]:
    """Text forms of a private key that contain no PEM marker: its PEM's base64 body on one
    line, the base64 of its DER in both encodings (PKCS#8 and SEC1/traditional), and the
    base64 of the whole PEM (how a Kubernetes Secret's `data` carries it)."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    forms = {"PEM base64 body": "".join(line for line in pem.splitlines() if not line.startswith("-----"))}
    for name, fmt in (
        ("PKCS#8 DER base64", serialization.PrivateFormat.PKCS8),
        ("traditional DER base64", serialization.PrivateFormat.TraditionalOpenSSL),
    ):
        der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        forms[name] = base64.b64encode(der).decode()
    forms["base64 of the PEM"] = base64.b64encode(pem.encode()).decode()
    return forms


def generated_pems(run: ProgramRun) -> dict[str, str]:
    """PrivateKey resource name -> the PEM it produced."""
    return {r.name: r.plain_outputs["privateKeyPem"] for r in run.of_type("tls:index/privateKey:PrivateKey")}


def exposed_copies(found: Iterator[Text], pems: dict[str, str]) -> list[str]:
    """Where an encoded copy of a key sits outside every secret value."""
    copies = {(name, form): text for name, pem in pems.items() for form, text in encoded_copies(pem).items()}
    return [
        f"{t.where}: {form} of {name}"
        for t in found
        if not t.secret
        for (name, form), text in copies.items()
        if text in t.value
    ]


def test_walker_knows_when_it_is_inside_a_secret():
    pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    value = {
        "plain": pem,
        "wrapped": rpc.wrap_rpc_secret({"deep": [pem]}),
        "list": [rpc.wrap_rpc_secret(pem), "public"],
    }
    found = {(t.where, t.secret) for t in texts(value, "v")}
    assert found == {
        ("v.plain", False),
        ("v.wrapped.deep[0]", True),
        ("v.list[0]", True),
        ("v.list[1]", False),
    }


def test_private_keys_appear_only_inside_secret_values(stack_run):
    holders = [t for t in everything(stack_run) if PRIVATE_KEY in t.value]
    exposed = [t.where for t in holders if not t.secret]
    assert exposed == []
    # Not vacuous: the keys do flow (key outputs, CSR/cert inputs, Kubernetes Secrets).
    assert len(holders) > 30
    where = {t.where.split(".")[0] for t in holders}
    assert "etcd-0-peer-tls" in where
    assert "etcd-peer-ca-cert" in where


def test_encoded_private_keys_appear_only_inside_secret_values(stack_run):
    pems = generated_pems(stack_run)
    assert len(pems) == 9
    assert exposed_copies(everything(stack_run), pems) == []


def test_encoded_copies_are_found_wherever_they_are_not_secret(stack_run):
    # The search above is not vacuous: each form, planted in a plain value, is reported;
    # the same inside a secret is not.
    pems = generated_pems(stack_run)
    forms = encoded_copies(pems["etcd-0-peer-key"])
    # The PEM's body is its DER in the encoding the PEM uses: three distinct texts.
    assert forms["PEM base64 body"] in (forms["PKCS#8 DER base64"], forms["traditional DER base64"])
    assert len(set(forms.values())) == 3
    assert all("PRIVATE KEY" not in text and "\n" not in text for text in forms.values())
    for form, text in forms.items():
        value = {"metadata": {"annotations": {"a": f"x{text}y"}}, "hidden": rpc.wrap_rpc_secret([text])}
        found = exposed_copies(texts(value, "planted"), pems)
        assert f"planted.metadata.annotations.a: {form} of etcd-0-peer-key" in found
        assert not any(where.startswith("planted.hidden") for where in found)


def test_the_walk_finds_every_generated_key(stack_run):
    generated = generated_keys(stack_run)
    assert len(generated) == 9  # two CAs, peer + server per member, etcdctl
    assert len(set(generated.values())) == 9
    assert keys_in(everything(stack_run)) == set(generated.values())


def test_ca_keys_never_reach_kubernetes(stack_run):
    generated = generated_keys(stack_run)
    ca_keys = {generated["etcd-peer-ca-key"], generated["etcd-client-ca-key"]}
    leaf_keys = set(generated.values()) - ca_keys
    for resource in stack_run.resources:
        if resource.type.startswith("kubernetes:"):
            found = keys_in(texts(resource.inputs, resource.name))
            assert not found & ca_keys, resource.name
    in_secrets = [key_identity(m["stringData"]["tls.key"]) for m in stack_run.manifests("Secret")]
    # Each leaf key is in exactly one Kubernetes Secret, under tls.key.
    assert sorted(in_secrets) == sorted(leaf_keys)


def test_secret_string_data_is_secret(stack_run):
    secrets = stack_run.of_type("kubernetes:core/v1:Secret")
    assert len(secrets) == 7
    for resource in secrets:
        assert rpc.is_rpc_secret(resource.inputs["stringData"]), resource.name
        assert rpc.is_rpc_secret(resource.outputs["stringData"]), resource.name
        assert "data" not in resource.inputs
        plain = resource.plain_inputs["stringData"]
        assert PRIVATE_KEY in plain["tls.key"]


@pytest.mark.parametrize(
    "output",
    [
        "members",
        "expectedOutcome",
        "healthCommand",
        "logsCommand",
        "logLookFor",
        "peerCaCert",
        "clientCaCert",
    ],
)
def test_stack_outputs_hold_no_key_material(stack_run, output):
    value = stack_run.outputs[output].value
    found = list(texts(value, output))
    assert found
    assert not any(PRIVATE_KEY in t.value for t in found)
    # Not even a fragment of a key's base64 body.
    bodies = {
        line
        for r in stack_run.of_type("tls:index/privateKey:PrivateKey")
        for line in r.plain_outputs["privateKeyPem"].splitlines()
        if not line.startswith("-----")
    }
    assert not any(body in t.value for t in found for body in bodies)
