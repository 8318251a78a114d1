"""Reads the stack's configuration and declares the etcd cluster. Nothing else."""

import pulumi

from components.etcd_cluster import EtcdCluster, EtcdClusterArgs
from components.pulumi_config import read_settings

parsed = read_settings(pulumi.Config(), pulumi.get_stack())
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
