"""EtcdCluster: TLS material from pulumi-tls and the Kubernetes objects per member.

An adapter only: every decision comes from `cluster_plan` and `settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from . import cluster_plan as plan
from .settings import Settings

COMPONENT_TYPE = "etcdpeersan:index:EtcdCluster"

CA_VALIDITY_HOURS = 5 * 365 * 24
# A year: long enough for a demo to be left running.
LEAF_VALIDITY_HOURS = 365 * 24
# pulumi-tls defaults to P224, which has no TLS 1.3 signature scheme and is deprecated.
ECDSA_CURVE = "P256"
CA_USES = ["cert_signing", "crl_signing", "digital_signature"]
# etcd dials peers with the peer certificate and its gRPC gateway dials itself with the
# server certificate, so both need client_auth as well as server_auth.
MEMBER_USES = ["digital_signature", "server_auth", "client_auth"]
CLIENT_USES = ["digital_signature", "client_auth"]


@dataclass(frozen=True)
class EtcdClusterArgs:
    settings: Settings


@dataclass(frozen=True)
class _KeyPair:
    key_pem: pulumi.Output[str]
    cert_pem: pulumi.Output[str]


class EtcdCluster(pulumi.ComponentResource):
    member_fqdns: pulumi.Output[dict[str, str]]
    expected_outcome: pulumi.Output[str]
    health_command: pulumi.Output[str]
    logs_command: pulumi.Output[str]
    log_marker: pulumi.Output[str]
    peer_ca_cert: pulumi.Output[str]
    client_ca_cert: pulumi.Output[str]

    def __init__(self, name: str, args: EtcdClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        self._name = name
        settings = args.settings
        members = plan.members_of(settings)
        child = pulumi.ResourceOptions(parent=self)

        peer_ca = self._ca("peer-ca", f"{settings.cluster_name} peer CA")
        client_ca = self._ca("client-ca", f"{settings.cluster_name} client CA")

        services = [
            k8s.core.v1.Service(
                f"{name}-{member.index}-svc",
                **_fields(plan.service_manifest(settings, member)),
                opts=child,
            )
            for member in members
        ]

        policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol", **_fields(plan.network_policy_manifest(settings)), opts=child
        )

        client = self._leaf(
            "etcdctl",
            client_ca,
            common_name=f"{settings.cluster_name}-etcdctl",
            dns_names=[],
            ip_addresses=[],
            uses=CLIENT_USES,
        )
        client_secret = self._secret(settings, None, "client", client, client_ca)

        for member in members:
            peer = self._leaf(
                f"{member.index}-peer",
                peer_ca,
                common_name=settings.peer_common_name,
                dns_names=plan.peer_dns_names(member),
                ip_addresses=[],
                uses=MEMBER_USES,
            )
            server = self._leaf(
                f"{member.index}-server",
                client_ca,
                common_name=member.name,
                dns_names=plan.server_dns_names(member),
                ip_addresses=plan.SERVER_IP_ADDRESSES,
                uses=MEMBER_USES,
            )
            secrets = [
                self._secret(settings, member, "peer", peer, peer_ca),
                self._secret(settings, member, "server", server, client_ca),
                client_secret,
            ]
            k8s.core.v1.Pod(
                f"{name}-{member.index}-pod",
                **_fields(plan.pod_manifest(settings, member)),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[*secrets, *services, policy],
                    # The name is fixed, so a replacement must delete first.
                    delete_before_replace=True,
                ),
            )

        self.member_fqdns = pulumi.Output.from_input({m.name: m.service_fqdn for m in members})
        self.expected_outcome = pulumi.Output.from_input(plan.expected_outcome(settings))
        self.health_command = pulumi.Output.from_input(plan.kubectl_health_command(settings))
        self.logs_command = pulumi.Output.from_input(plan.kubectl_logs_command(settings))
        self.log_marker = pulumi.Output.from_input(plan.REJECTION_MARKER)
        self.peer_ca_cert = peer_ca.cert_pem
        self.client_ca_cert = client_ca.cert_pem
        self.register_outputs(
            {
                "memberFqdns": self.member_fqdns,
                "expectedOutcome": self.expected_outcome,
                "healthCommand": self.health_command,
                "logsCommand": self.logs_command,
                "logMarker": self.log_marker,
                "peerCaCert": self.peer_ca_cert,
                "clientCaCert": self.client_ca_cert,
            }
        )

    def _key(self, label: str) -> tls.PrivateKey:
        return tls.PrivateKey(
            f"{self._name}-{label}-key",
            algorithm="ECDSA",
            ecdsa_curve=ECDSA_CURVE,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _ca(self, label: str, common_name: str) -> _KeyPair:
        key = self._key(label)
        cert = tls.SelfSignedCert(
            f"{self._name}-{label}-cert",
            private_key_pem=key.private_key_pem,
            subject={"common_name": common_name, "organization": "etcd-peer-san"},
            is_ca_certificate=True,
            allowed_uses=CA_USES,
            validity_period_hours=CA_VALIDITY_HOURS,
            set_subject_key_id=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return _KeyPair(key.private_key_pem, cert.cert_pem)

    def _leaf(
        self,
        label: str,
        ca: _KeyPair,
        *,
        common_name: str,
        dns_names: list[str],
        ip_addresses: list[str],
        uses: list[str],
    ) -> _KeyPair:
        key = self._key(label)
        request = tls.CertRequest(
            f"{self._name}-{label}-csr",
            private_key_pem=key.private_key_pem,
            subject={"common_name": common_name, "organization": "etcd-peer-san"},
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            opts=pulumi.ResourceOptions(parent=self),
        )
        cert = tls.LocallySignedCert(
            f"{self._name}-{label}-cert",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca.key_pem,
            ca_cert_pem=ca.cert_pem,
            allowed_uses=uses,
            validity_period_hours=LEAF_VALIDITY_HOURS,
            set_subject_key_id=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return _KeyPair(key.private_key_pem, cert.cert_pem)

    def _secret(
        self,
        settings: Settings,
        member: plan.Member | None,
        role: plan.TlsRole,
        pair: _KeyPair,
        ca: _KeyPair,
    ) -> k8s.core.v1.Secret:
        # key_pem is a secret output already (pulumi-tls marks it); the whole
        # stringData is wrapped as well, so no value of it is ever stored in plain text.
        data = {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": ca.cert_pem}
        manifest = plan.secret_manifest(settings, member, role, data)
        manifest["stringData"] = pulumi.Output.secret(manifest["stringData"])
        owner = "shared" if member is None else str(member.index)
        return k8s.core.v1.Secret(
            f"{self._name}-{owner}-{role}-tls",
            **_fields(manifest),
            opts=pulumi.ResourceOptions(parent=self),
        )


def _fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a pulumi-kubernetes resource from a camelCase manifest."""
    renames = {"stringData": "string_data", "apiVersion": "api_version"}
    return {
        renames.get(key, key): value for key, value in manifest.items() if key not in ("apiVersion", "kind")
    }
