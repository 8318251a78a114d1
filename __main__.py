"""Reads the stack's configuration and declares the etcd cluster. Nothing else."""

import pulumi

from components.etcd_cluster import EtcdCluster, EtcdClusterArgs
from components.pulumi_config import read_settings
from components.settings import SettingsError

try:
    parsed = read_settings(pulumi.Config(), pulumi.get_stack())
except SettingsError as exc:
    # The CLI prints a RunError as its message alone, any other exception as a traceback.
    raise pulumi.RunError(str(exc)) from None
for warning in parsed.warnings:
    pulumi.log.warn(warning)

cluster = EtcdCluster("etcd", EtcdClusterArgs(settings=parsed.settings))

pulumi.export("members", cluster.member_fqdns)
pulumi.export("expectedOutcome", cluster.expected_outcome)
pulumi.export("healthCommand", cluster.health_command)
pulumi.export("logsCommand", cluster.logs_command)
pulumi.export("logLookFor", cluster.log_marker)
pulumi.export("peerCaCert", cluster.peer_ca_cert)
pulumi.export("clientCaCert", cluster.client_ca_cert)
