"""lab.evidence on real etcd log lines: which lines make a peer-matrix cell `accepted`,
`rejected`, `refused` or leave it `unknown`, for etcd 3.5.1 (JSON logger) and 3.4.23
(text logger).

Every line below was captured from real members in lab runs (`python -m lab run --keep`,
pods/<member>/container.log), only selected, never edited:
- HEALTHY: the skip stack, healthy (3 members; etcd-skip-0 with its "added member" lines
  and lines that must not count: outgoing streams, "started" writers);
- CN: the same members started with `--peer-cert-allowed-cn=nobody` while their peer
  certificates carry CN etcd-skip-peer (each member's first line per peer);
- SAN: the noskip stack's first rejection;
- INTRUDER: `python -m lab intruders --stack skip`, the foreign-ca and other-cn attempts
  from the intruder pod (10.244.0.13), as logged by etcd-skip-0.
Members: etcd-skip-N has pod IP 10.244.0.1N and advertises
https://etcd-skip-N.default.svc.cluster.local:2380.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from lab.evidence import (
    CELL_MEANINGS,
    CELL_VALUES,
    RejectionMatrix,
    last_log_lines,
    member_id,
    peer_hosts,
    read_lines,
    settled,
)
from lab.report import render
from lab.run import Lab, LabReport, MemberReport, evaluate
from tests.lab_support import lab_namespaces

MEMBERS = ["etcd-skip-0", "etcd-skip-1", "etcd-skip-2"]
BY_IP = {f"10.244.0.1{i}": name for i, name in enumerate(MEMBERS)}
HOSTS = peer_hosts({name: f"https://{name}.default.svc.cluster.local:2380" for name in MEMBERS})
IDS = {"105d24389b0456": "etcd-skip-0", "619022402b309553": "etcd-skip-1", "16294f12d3ac4312": "etcd-skip-2"}
VERSIONS = ["3.5.1", "3.4.23"]
INTRUDER_IP = "10.244.0.13"

HEALTHY = {
    "3.5.1": {
        "etcd-skip-0": r"""
{"level":"info","ts":"2026-12-03T22:06:30.393Z","caller":"etcdserver/raft.go:448","msg":"starting local member","local-member-id":"105d24389b0456","cluster-id":"4a04d7a8c81ac38c"}
{"level":"info","ts":"2026-12-03T22:06:30.398Z","caller":"rafthttp/stream.go:169","msg":"started stream writer with remote peer","local-member-id":"105d24389b0456","remote-peer-id":"16294f12d3ac4312"}
{"level":"info","ts":"2026-12-03T22:06:30.398Z","caller":"rafthttp/stream.go:169","msg":"started stream writer with remote peer","local-member-id":"105d24389b0456","remote-peer-id":"16294f12d3ac4312"}
{"level":"info","ts":"2026-12-03T22:06:30.405Z","caller":"rafthttp/stream.go:169","msg":"started stream writer with remote peer","local-member-id":"105d24389b0456","remote-peer-id":"619022402b309553"}
{"level":"info","ts":"2026-12-03T22:06:30.407Z","caller":"rafthttp/stream.go:169","msg":"started stream writer with remote peer","local-member-id":"105d24389b0456","remote-peer-id":"619022402b309553"}
{"level":"info","ts":"2026-12-03T22:06:30.408Z","caller":"membership/cluster.go:421","msg":"added member","cluster-id":"4a04d7a8c81ac38c","local-member-id":"105d24389b0456","added-peer-id":"105d24389b0456","added-peer-peer-urls":["https://etcd-skip-0.default.svc.cluster.local:2380"]}
{"level":"info","ts":"2026-12-03T22:06:30.408Z","caller":"membership/cluster.go:421","msg":"added member","cluster-id":"4a04d7a8c81ac38c","local-member-id":"105d24389b0456","added-peer-id":"16294f12d3ac4312","added-peer-peer-urls":["https://etcd-skip-2.default.svc.cluster.local:2380"]}
{"level":"info","ts":"2026-12-03T22:06:30.408Z","caller":"membership/cluster.go:421","msg":"added member","cluster-id":"4a04d7a8c81ac38c","local-member-id":"105d24389b0456","added-peer-id":"619022402b309553","added-peer-peer-urls":["https://etcd-skip-1.default.svc.cluster.local:2380"]}
{"level":"info","ts":"2026-12-03T22:06:30.409Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream Message","local-member-id":"105d24389b0456","remote-peer-id":"16294f12d3ac4312"}
{"level":"info","ts":"2026-12-03T22:06:30.409Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream MsgApp v2","local-member-id":"105d24389b0456","remote-peer-id":"16294f12d3ac4312"}
{"level":"info","ts":"2026-12-03T22:06:30.409Z","caller":"rafthttp/stream.go:412","msg":"established TCP streaming connection with remote peer","stream-reader-type":"stream MsgApp v2","local-member-id":"105d24389b0456","remote-peer-id":"16294f12d3ac4312"}
{"level":"info","ts":"2026-12-03T22:06:30.409Z","caller":"rafthttp/stream.go:412","msg":"established TCP streaming connection with remote peer","stream-reader-type":"stream Message","local-member-id":"105d24389b0456","remote-peer-id":"16294f12d3ac4312"}
{"level":"info","ts":"2026-12-03T22:06:30.417Z","caller":"rafthttp/stream.go:412","msg":"established TCP streaming connection with remote peer","stream-reader-type":"stream Message","local-member-id":"105d24389b0456","remote-peer-id":"619022402b309553"}
{"level":"info","ts":"2026-12-03T22:06:30.417Z","caller":"rafthttp/stream.go:412","msg":"established TCP streaming connection with remote peer","stream-reader-type":"stream MsgApp v2","local-member-id":"105d24389b0456","remote-peer-id":"619022402b309553"}
{"level":"info","ts":"2026-12-03T22:06:30.419Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream Message","local-member-id":"105d24389b0456","remote-peer-id":"619022402b309553"}
{"level":"info","ts":"2026-12-03T22:06:30.419Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream MsgApp v2","local-member-id":"105d24389b0456","remote-peer-id":"619022402b309553"}
""",  # noqa: E501
        "etcd-skip-1": r"""
{"level":"info","ts":"2026-12-03T22:06:30.390Z","caller":"etcdserver/raft.go:448","msg":"starting local member","local-member-id":"619022402b309553","cluster-id":"4a04d7a8c81ac38c"}
{"level":"info","ts":"2026-12-03T22:06:30.416Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream Message","local-member-id":"619022402b309553","remote-peer-id":"105d24389b0456"}
{"level":"info","ts":"2026-12-03T22:06:30.416Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream MsgApp v2","local-member-id":"619022402b309553","remote-peer-id":"16294f12d3ac4312"}
{"level":"info","ts":"2026-12-03T22:06:30.417Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream Message","local-member-id":"619022402b309553","remote-peer-id":"16294f12d3ac4312"}
{"level":"info","ts":"2026-12-03T22:06:30.417Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream MsgApp v2","local-member-id":"619022402b309553","remote-peer-id":"105d24389b0456"}
""",  # noqa: E501
        "etcd-skip-2": r"""
{"level":"info","ts":"2026-12-03T22:06:30.392Z","caller":"etcdserver/raft.go:448","msg":"starting local member","local-member-id":"16294f12d3ac4312","cluster-id":"4a04d7a8c81ac38c"}
{"level":"info","ts":"2026-12-03T22:06:30.407Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream Message","local-member-id":"16294f12d3ac4312","remote-peer-id":"105d24389b0456"}
{"level":"info","ts":"2026-12-03T22:06:30.413Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream MsgApp v2","local-member-id":"16294f12d3ac4312","remote-peer-id":"105d24389b0456"}
{"level":"info","ts":"2026-12-03T22:06:30.418Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream Message","local-member-id":"16294f12d3ac4312","remote-peer-id":"619022402b309553"}
{"level":"info","ts":"2026-12-03T22:06:30.419Z","caller":"rafthttp/stream.go:274","msg":"established TCP streaming connection with remote peer","stream-writer-type":"stream MsgApp v2","local-member-id":"16294f12d3ac4312","remote-peer-id":"619022402b309553"}
""",  # noqa: E501
    },
    "3.4.23": {
        "etcd-skip-0": r"""
2026-12-03 22:06:32.008306 I | etcdserver: starting member 105d24389b0456 in cluster 4a04d7a8c81ac38c
2026-12-03 22:06:32.012027 I | rafthttp: started streaming with peer 16294f12d3ac4312 (writer)
2026-12-03 22:06:32.012111 I | rafthttp: started streaming with peer 16294f12d3ac4312 (writer)
2026-12-03 22:06:32.013112 I | rafthttp: started streaming with peer 619022402b309553 (writer)
2026-12-03 22:06:32.013334 I | rafthttp: started streaming with peer 619022402b309553 (writer)
2026-12-03 22:06:32.016121 I | rafthttp: established a TCP streaming connection with peer 619022402b309553 (stream Message writer)
2026-12-03 22:06:32.016231 I | rafthttp: established a TCP streaming connection with peer 619022402b309553 (stream MsgApp v2 writer)
2026-12-03 22:06:32.016746 I | etcdserver/membership: added member 105d24389b0456 [https://etcd-skip-0.default.svc.cluster.local:2380] to cluster 4a04d7a8c81ac38c
2026-12-03 22:06:32.016792 I | etcdserver/membership: added member 16294f12d3ac4312 [https://etcd-skip-2.default.svc.cluster.local:2380] to cluster 4a04d7a8c81ac38c
2026-12-03 22:06:32.016827 I | etcdserver/membership: added member 619022402b309553 [https://etcd-skip-1.default.svc.cluster.local:2380] to cluster 4a04d7a8c81ac38c
2026-12-03 22:06:32.019750 I | rafthttp: established a TCP streaming connection with peer 619022402b309553 (stream Message reader)
2026-12-03 22:06:32.019936 I | rafthttp: established a TCP streaming connection with peer 619022402b309553 (stream MsgApp v2 reader)
2026-12-03 22:06:32.030444 I | rafthttp: established a TCP streaming connection with peer 16294f12d3ac4312 (stream Message writer)
2026-12-03 22:06:32.032733 I | rafthttp: established a TCP streaming connection with peer 16294f12d3ac4312 (stream MsgApp v2 reader)
2026-12-03 22:06:32.033718 I | rafthttp: established a TCP streaming connection with peer 16294f12d3ac4312 (stream Message reader)
2026-12-03 22:06:32.034586 I | rafthttp: established a TCP streaming connection with peer 16294f12d3ac4312 (stream MsgApp v2 writer)
""",  # noqa: E501
        "etcd-skip-1": r"""
2026-12-03 22:06:31.993169 I | etcdserver: starting member 619022402b309553 in cluster 4a04d7a8c81ac38c
2026-12-03 22:06:32.017082 I | rafthttp: established a TCP streaming connection with peer 105d24389b0456 (stream Message writer)
2026-12-03 22:06:32.020359 I | rafthttp: established a TCP streaming connection with peer 105d24389b0456 (stream MsgApp v2 writer)
2026-12-03 22:06:32.033873 I | rafthttp: established a TCP streaming connection with peer 16294f12d3ac4312 (stream MsgApp v2 writer)
2026-12-03 22:06:32.034263 I | rafthttp: established a TCP streaming connection with peer 16294f12d3ac4312 (stream Message writer)
""",  # noqa: E501
        "etcd-skip-2": r"""
2026-12-03 22:06:32.019211 I | etcdserver: starting member 16294f12d3ac4312 in cluster 4a04d7a8c81ac38c
2026-12-03 22:06:32.032714 I | rafthttp: established a TCP streaming connection with peer 105d24389b0456 (stream MsgApp v2 writer)
2026-12-03 22:06:32.033438 I | rafthttp: established a TCP streaming connection with peer 619022402b309553 (stream Message writer)
2026-12-03 22:06:32.033522 I | rafthttp: established a TCP streaming connection with peer 619022402b309553 (stream MsgApp v2 writer)
2026-12-03 22:06:32.033743 I | rafthttp: established a TCP streaming connection with peer 105d24389b0456 (stream Message writer)
""",  # noqa: E501
    },
}

CN = {
    "3.5.1": {
        "etcd-skip-0": r"""
{"level":"info","ts":"2026-12-03T22:07:22.020Z","caller":"etcdserver/raft.go:448","msg":"starting local member","local-member-id":"105d24389b0456","cluster-id":"4a04d7a8c81ac38c"}
{"level":"warn","ts":"2026-12-03T22:07:22.022Z","caller":"embed/config_logging.go:169","msg":"rejected connection","remote-addr":"10.244.0.12:41400","server-name":"etcd-skip-0.default.svc.cluster.local","error":"remote error: tls: bad certificate"}
{"level":"warn","ts":"2026-12-03T22:07:22.035Z","caller":"embed/config_logging.go:169","msg":"rejected connection","remote-addr":"10.244.0.11:54178","server-name":"etcd-skip-0.default.svc.cluster.local","error":"remote error: tls: bad certificate"}
{"level":"warn","ts":"2026-12-03T22:07:27.031Z","caller":"rafthttp/probing_status.go:68","msg":"prober detected unhealthy status","round-tripper-name":"ROUND_TRIPPER_SNAPSHOT","remote-peer-id":"619022402b309553","rtt":"0s","error":"client certificate authentication failed"}
{"level":"warn","ts":"2026-12-03T22:07:27.032Z","caller":"rafthttp/probing_status.go:68","msg":"prober detected unhealthy status","round-tripper-name":"ROUND_TRIPPER_RAFT_MESSAGE","remote-peer-id":"16294f12d3ac4312","rtt":"0s","error":"client certificate authentication failed"}
""",  # noqa: E501
        "etcd-skip-1": r"""
{"level":"info","ts":"2026-12-03T22:07:22.038Z","caller":"etcdserver/raft.go:448","msg":"starting local member","local-member-id":"619022402b309553","cluster-id":"4a04d7a8c81ac38c"}
{"level":"warn","ts":"2026-12-03T22:07:22.032Z","caller":"embed/config_logging.go:169","msg":"rejected connection","remote-addr":"10.244.0.10:49290","server-name":"etcd-skip-1.default.svc.cluster.local","error":"remote error: tls: bad certificate"}
{"level":"warn","ts":"2026-12-03T22:07:22.048Z","caller":"embed/config_logging.go:169","msg":"rejected connection","remote-addr":"10.244.0.12:52056","server-name":"etcd-skip-1.default.svc.cluster.local","error":"remote error: tls: bad certificate"}
{"level":"warn","ts":"2026-12-03T22:07:27.044Z","caller":"rafthttp/probing_status.go:68","msg":"prober detected unhealthy status","round-tripper-name":"ROUND_TRIPPER_RAFT_MESSAGE","remote-peer-id":"105d24389b0456","rtt":"0s","error":"client certificate authentication failed"}
{"level":"warn","ts":"2026-12-03T22:07:27.049Z","caller":"rafthttp/probing_status.go:68","msg":"prober detected unhealthy status","round-tripper-name":"ROUND_TRIPPER_RAFT_MESSAGE","remote-peer-id":"16294f12d3ac4312","rtt":"0s","error":"client certificate authentication failed"}
""",  # noqa: E501
        "etcd-skip-2": r"""
{"level":"info","ts":"2026-12-03T22:07:22.026Z","caller":"etcdserver/raft.go:448","msg":"starting local member","local-member-id":"16294f12d3ac4312","cluster-id":"4a04d7a8c81ac38c"}
{"level":"warn","ts":"2026-12-03T22:07:22.018Z","caller":"embed/config_logging.go:169","msg":"rejected connection","remote-addr":"10.244.0.10:47482","server-name":"etcd-skip-2.default.svc.cluster.local","error":"remote error: tls: bad certificate"}
{"level":"warn","ts":"2026-12-03T22:07:22.037Z","caller":"embed/config_logging.go:169","msg":"rejected connection","remote-addr":"10.244.0.11:52700","server-name":"etcd-skip-2.default.svc.cluster.local","error":"remote error: tls: bad certificate"}
{"level":"warn","ts":"2026-12-03T22:07:27.040Z","caller":"rafthttp/probing_status.go:68","msg":"prober detected unhealthy status","round-tripper-name":"ROUND_TRIPPER_RAFT_MESSAGE","remote-peer-id":"105d24389b0456","rtt":"0s","error":"client certificate authentication failed"}
{"level":"warn","ts":"2026-12-03T22:07:27.044Z","caller":"rafthttp/probing_status.go:68","msg":"prober detected unhealthy status","round-tripper-name":"ROUND_TRIPPER_SNAPSHOT","remote-peer-id":"619022402b309553","rtt":"0s","error":"client certificate authentication failed"}
""",  # noqa: E501
    },
    "3.4.23": {
        "etcd-skip-0": r"""
2026-12-03 22:07:30.780039 I | etcdserver: starting member 105d24389b0456 in cluster 4a04d7a8c81ac38c
2026-12-03 22:07:30.778516 I | embed: rejected connection from "10.244.0.11:55622" (error "remote error: tls: bad certificate", ServerName "etcd-skip-0.default.svc.cluster.local")
2026-12-03 22:07:30.791495 I | embed: rejected connection from "10.244.0.12:42966" (error "remote error: tls: bad certificate", ServerName "etcd-skip-0.default.svc.cluster.local")
2026-12-03 22:07:35.788524 W | rafthttp: health check for peer 16294f12d3ac4312 could not connect: client certificate authentication failed
2026-12-03 22:07:35.793750 W | rafthttp: health check for peer 619022402b309553 could not connect: client certificate authentication failed
""",  # noqa: E501
        "etcd-skip-1": r"""
2026-12-03 22:07:30.783957 I | etcdserver: starting member 619022402b309553 in cluster 4a04d7a8c81ac38c
2026-12-03 22:07:30.778185 I | embed: rejected connection from "10.244.0.10:50808" (error "remote error: tls: bad certificate", ServerName "etcd-skip-1.default.svc.cluster.local")
2026-12-03 22:07:30.793765 I | embed: rejected connection from "10.244.0.12:53588" (error "remote error: tls: bad certificate", ServerName "etcd-skip-1.default.svc.cluster.local")
2026-12-03 22:07:35.801701 W | rafthttp: health check for peer 105d24389b0456 could not connect: client certificate authentication failed
2026-12-03 22:07:35.805881 W | rafthttp: health check for peer 16294f12d3ac4312 could not connect: client certificate authentication failed
""",  # noqa: E501
        "etcd-skip-2": r"""
2026-12-03 22:07:30.794712 I | etcdserver: starting member 16294f12d3ac4312 in cluster 4a04d7a8c81ac38c
2026-12-03 22:07:30.789224 I | embed: rejected connection from "10.244.0.10:49080" (error "remote error: tls: bad certificate", ServerName "etcd-skip-2.default.svc.cluster.local")
2026-12-03 22:07:30.813362 I | embed: rejected connection from "10.244.0.11:54334" (error "remote error: tls: bad certificate", ServerName "etcd-skip-2.default.svc.cluster.local")
2026-12-03 22:07:35.805571 W | rafthttp: health check for peer 105d24389b0456 could not connect: client certificate authentication failed
2026-12-03 22:07:35.814420 W | rafthttp: health check for peer 619022402b309553 could not connect: client certificate authentication failed
""",  # noqa: E501
    },
}

SAN = {
    "3.5.1": {
        "etcd-noskip-0": r"""
{"level":"warn","ts":"2026-12-03T22:08:49.998Z","caller":"embed/config_logging.go:160","msg":"rejected connection","remote-addr":"10.244.0.11:55116","server-name":"etcd-noskip-0.default.svc.cluster.local","ip-addresses":[],"dns-names":["etcd-noskip-1","etcd-noskip-1.default","etcd-noskip-1.default.svc","etcd-noskip-1.default.svc.cluster.local","localhost"],"error":"tls: \"10.244.0.11\" does not match any of DNSNames [\"etcd-noskip-1\" \"etcd-noskip-1.default\" \"etcd-noskip-1.default.svc\" \"etcd-noskip-1.default.svc.cluster.local\" \"localhost\"] (lookup 11.0.244.10.in-addr.arpa. on 127.0.0.1:53: read udp 127.0.0.1:44770->127.0.0.1:53: read: connection refused)"}
""",  # noqa: E501
    },
    "3.4.23": {
        "etcd-noskip-0": r"""
2026-12-03 22:08:54.374202 I | embed: rejected connection from "10.244.0.11:59148" (error "tls: \"10.244.0.11\" does not match any of DNSNames [\"etcd-noskip-1\" \"etcd-noskip-1.default\" \"etcd-noskip-1.default.svc\" \"etcd-noskip-1.default.svc.cluster.local\" \"localhost\"] (lookup 11.0.244.10.in-addr.arpa. on 127.0.0.1:53: read udp 127.0.0.1:55972->127.0.0.1:53: read: connection refused)", ServerName "etcd-noskip-0.default.svc.cluster.local", IPAddresses [], DNSNames ["etcd-noskip-1" "etcd-noskip-1.default" "etcd-noskip-1.default.svc" "etcd-noskip-1.default.svc.cluster.local" "localhost"])
""",  # noqa: E501
    },
}

INTRUDER = {
    "3.5.1": {
        "etcd-skip-0": r"""
{"level":"warn","ts":"2026-12-03T22:23:46.711Z","caller":"embed/config_logging.go:169","msg":"rejected connection","remote-addr":"10.244.0.13:39282","server-name":"etcd-skip-0.default.svc.cluster.local","error":"tls: failed to verify client certificate: x509: certificate signed by unknown authority (possibly because of \"x509: ECDSA verification failure\" while trying to verify candidate authority certificate \"etcd-skip peer CA\")"}
{"level":"warn","ts":"2026-12-03T22:23:46.722Z","caller":"embed/config_logging.go:160","msg":"rejected connection","remote-addr":"10.244.0.13:39306","server-name":"etcd-skip-0.default.svc.cluster.local","ip-addresses":[],"dns-names":["etcd-skip-0","etcd-skip-0.default","etcd-skip-0.default.svc","etcd-skip-0.default.svc.cluster.local","localhost"],"error":"client certificate authentication failed"}
""",  # noqa: E501
    },
    "3.4.23": {
        "etcd-skip-0": r"""
2026-12-03 22:23:47.907067 I | embed: rejected connection from "10.244.0.13:39362" (error "tls: failed to verify client certificate: x509: certificate signed by unknown authority (possibly because of \"x509: ECDSA verification failure\" while trying to verify candidate authority certificate \"etcd-skip peer CA\")", ServerName "etcd-skip-0.default.svc.cluster.local")
2026-12-03 22:23:47.919977 I | embed: rejected connection from "10.244.0.13:39384" (error "client certificate authentication failed", ServerName "etcd-skip-0.default.svc.cluster.local", IPAddresses [], DNSNames ["etcd-skip-0" "etcd-skip-0.default" "etcd-skip-0.default.svc" "etcd-skip-0.default.svc.cluster.local" "localhost"])
""",  # noqa: E501
    },
}


def lines(block: str) -> list[str]:
    return block.strip("\n").split("\n")


def matrix_of(logs: dict[str, str], *, hosts: dict[str, str] | None = None) -> RejectionMatrix:
    matrix = RejectionMatrix(list(MEMBERS), peer_hosts=HOSTS if hosts is None else hosts)
    for owner, block in logs.items():
        matrix.read(owner, lines(block), BY_IP)
    return matrix


def off_diagonal(matrix: RejectionMatrix) -> set[str]:
    return {matrix.cell(r, c) for r, c in matrix.pairs()}


def everywhere(value: str) -> dict[str, dict[str, str]]:
    return {r: {c: "-" if r == c else value for c in MEMBERS} for r in MEMBERS}


# ---------------------------------------------------------------- accepted


@pytest.mark.parametrize("version", VERSIONS)
def test_a_healthy_cluster_accepts_every_peer_by_evidence(version):
    matrix = matrix_of(HEALTHY[version])
    assert matrix.as_dict() == everywhere("accepted")
    assert matrix.all_accepted and not matrix.closed and not matrix.complete
    assert (matrix.total, matrix.refusals, matrix.first_refusal) == (0, {}, None)
    assert matrix.member_ids == IDS
    # Two streams (Message, MsgApp v2) accepted per pair, nothing else counted.
    assert matrix.accepted_streams == {pair: 2 for pair in matrix.pairs()}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_accepting_member_is_the_log_owner(version):
    """A stream-writer line in X's log with remote peer Y: X accepted Y's connection."""
    found = read_lines("etcd-skip-1", lines(HEALTHY[version]["etcd-skip-1"]))
    assert {(a.receiver, IDS[a.peer_id]) for a in found.accepted} == {
        ("etcd-skip-1", "etcd-skip-0"),
        ("etcd-skip-1", "etcd-skip-2"),
    }
    assert found.own_id == "619022402b309553"


@pytest.mark.parametrize("version", VERSIONS)
def test_outgoing_and_started_streams_are_no_evidence(version):
    """Stream-reader lines are the member's own dials; "started" writers wait for a peer."""
    not_accepting = [
        line
        for line in lines(HEALTHY[version]["etcd-skip-0"])
        if "reader" in line or "started stream" in line or "started streaming" in line
    ]
    assert len(not_accepting) >= 2
    found = read_lines("etcd-skip-0", not_accepting)
    assert (found.accepted, found.refusals, found.rejections) == ([], [], [])


@pytest.mark.parametrize("version", VERSIONS)
def test_ids_are_mapped_from_the_added_member_lines(version):
    """Without the members' own-ID lines, the "added member" lines (peer URL host = the
    member's Service name) still name every ID."""
    logs = {
        owner: "\n".join(
            line
            for line in lines(block)
            if "starting local member" not in line and "starting member" not in line
        )
        for owner, block in HEALTHY[version].items()
    }
    matrix = matrix_of(logs)
    assert matrix.member_ids == IDS
    assert matrix.as_dict() == everywhere("accepted")


@pytest.mark.parametrize("version", VERSIONS)
def test_streams_logged_before_their_id_is_known_count_once_it_is(version):
    """3.4 logs accepted streams before its "added member" lines: resolved later."""
    matrix = RejectionMatrix(list(MEMBERS), peer_hosts=HOSTS)
    streams = [line for line in lines(HEALTHY[version]["etcd-skip-0"]) if "writer" in line]
    matrix.read("etcd-skip-0", [line for line in streams if "established" in line], BY_IP)
    assert matrix.cell("etcd-skip-0", "etcd-skip-1") == "unknown"  # no ID known yet
    matrix.read("etcd-skip-1", lines(HEALTHY[version]["etcd-skip-1"])[:1], BY_IP)  # its own ID
    assert matrix.cell("etcd-skip-0", "etcd-skip-1") == "accepted"
    assert matrix.cell("etcd-skip-0", "etcd-skip-2") == "unknown"


def test_no_evidence_is_unknown_not_accepted():
    matrix = RejectionMatrix(list(MEMBERS), peer_hosts=HOSTS)
    assert matrix.as_dict() == everywhere("unknown")
    assert not matrix.all_accepted and not matrix.closed and not matrix.complete
    # Accepted streams whose IDs nothing maps (no own-ID line, no known peer host): unknown.
    assert matrix_of(
        {o: "\n".join(x for x in lines(b) if "writer" in x) for o, b in HEALTHY["3.5.1"].items()}, hosts={}
    ).as_dict() == everywhere("unknown")


# ---------------------------------------------------------------- refused


@pytest.mark.parametrize("version", VERSIONS)
def test_a_cn_pin_mismatch_refuses_every_pair(version):
    matrix = matrix_of(CN[version])
    assert matrix.as_dict() == everywhere("refused")
    assert matrix.closed and not matrix.complete and not matrix.all_accepted
    assert matrix.total == 0 and matrix.unknown_sources == {}
    assert matrix.first_refusal is not None


@pytest.mark.parametrize("version", VERSIONS)
def test_the_receiving_side_sees_the_connecting_peer_refuse_its_certificate(version):
    """With the pin on both sides the dialer checks first: it refuses the receiving
    member's certificate, and the receiving member logs the TLS alert with the dialer's
    address, at once (the CN error itself is only logged by the dialer, ~5 s later)."""
    logs = {o: "\n".join(x for x in lines(b) if "bad certificate" in x) for o, b in CN[version].items()}
    matrix = matrix_of(logs)
    assert matrix.as_dict() == everywhere("refused")
    found = read_lines("etcd-skip-0", lines(logs["etcd-skip-0"]))
    assert {r.source_ip for r in found.refusals} == {"10.244.0.11", "10.244.0.12"}
    assert all(r.peer_id is None for r in found.refusals)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_connecting_side_logs_the_cn_error_for_the_receiving_member(version):
    """The dialer's own line: its connection to <peer id> failed the CN pin. Cell: row =
    that peer (receiving), column = the dialer (the log owner)."""
    logs = {
        o: "\n".join(
            x for x in lines(b) if "client certificate authentication failed" in x or "starting" in x
        )
        for o, b in CN[version].items()
    }
    found = read_lines("etcd-skip-0", lines(logs["etcd-skip-0"]))
    assert {IDS[r.peer_id or ""] for r in found.refusals} == {"etcd-skip-1", "etcd-skip-2"}
    assert all(r.source_ip is None for r in found.refusals)
    matrix = matrix_of(logs)
    assert matrix.as_dict() == everywhere("refused")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_peer_refused_by_the_receiving_member_itself(version):
    """The receiving member's own CN check (a dialer that does not pin: the intruder) and
    an unknown CA: `refused` when the address is a member's, ignored otherwise."""
    block = lines(INTRUDER[version]["etcd-skip-0"])
    assert any("client certificate authentication failed" in x for x in block)
    assert any("certificate signed by unknown authority" in x for x in block)
    found = read_lines("etcd-skip-0", block)
    assert [r.source_ip for r in found.refusals] == [INTRUDER_IP, INTRUDER_IP]
    matrix = RejectionMatrix(list(MEMBERS))
    matrix.read("etcd-skip-0", block, BY_IP)
    assert matrix.refusals == {} and off_diagonal(matrix) == {"unknown"}
    matrix.read("etcd-skip-0", block, {INTRUDER_IP: "etcd-skip-1"})
    assert matrix.cell("etcd-skip-0", "etcd-skip-1") == "refused"
    assert matrix.refusals == {("etcd-skip-0", "etcd-skip-1"): 2}


# ---------------------------------------------------------------- rejected


@pytest.mark.parametrize("version", VERSIONS)
def test_a_san_rejection_is_rejected_and_outranks_other_evidence(version):
    line = lines(SAN[version]["etcd-noskip-0"])
    found = read_lines("etcd-noskip-0", line)
    assert [r.source_ip for r in found.rejections] == ["10.244.0.11"]
    assert found.refusals == []
    members = ["etcd-noskip-0", "etcd-noskip-1"]
    matrix = RejectionMatrix(members)
    matrix.refusals[("etcd-noskip-0", "etcd-noskip-1")] = 1
    matrix.accepted_streams[("etcd-noskip-0", "etcd-noskip-1")] = 1
    matrix.read("etcd-noskip-0", line, {"10.244.0.11": "etcd-noskip-1"})
    assert matrix.cell("etcd-noskip-0", "etcd-noskip-1") == "rejected"
    assert matrix.first_line == line[0]


def test_member_ids_are_spelled_like_etcd():
    assert member_id("00105d24389b0456") == member_id("105D24389B0456") == "105d24389b0456"


# ---------------------------------------------------------------- report


def _report(matrix: RejectionMatrix, verdict: str) -> LabReport:
    return LabReport(
        stack="skip",
        etcd_path="/x/etcd",
        etcd_version="3.5.1",
        run_id="abc123",
        run_dir="/tmp/etcd-san-lab/abc123",
        kept=False,
        members=[MemberReport(m, f"10.244.0.1{i}", f"10.96.0.1{i}", 0) for i, m in enumerate(MEMBERS)],
        matrix=matrix,
        verdict=verdict,
        predicted="healthy",
        timings={"verdict": 0.06, "evidence": 0.0, "total": 0.5},
    )


def test_the_report_shows_each_value_with_its_meaning_and_json_keeps_the_words():
    refused = _report(matrix_of(CN["3.5.1"]), "unhealthy")
    text = render(refused)
    assert "refused: another peer-auth refusal" in text
    assert "accepted:" not in text and "unknown:" not in text  # only the values shown
    assert "first other peer-auth refusal, verbatim:" in text
    assert refused.as_dict()["peerMatrix"] == everywhere("refused")
    mixed = matrix_of({"etcd-skip-0": HEALTHY["3.4.23"]["etcd-skip-0"]}, hosts=HOSTS)
    shown = _report(mixed, "unhealthy")
    assert {v for row in shown.as_dict()["peerMatrix"].values() for v in row.values()} == {
        "-",
        "accepted",
        "unknown",
    }
    assert "unknown: no evidence" in render(shown) and "accepted: the receiving member" in render(shown)
    assert set(CELL_VALUES) == {"accepted", "rejected", "refused", "unknown"}


def _full_report() -> LabReport:
    """A report with every section the human report can show: each matrix value, both
    first lines, a member that exited, one without a liveness probe, etcdctl output,
    a warning, the deadline note and a kept run directory."""
    matrix = RejectionMatrix(list(MEMBERS))
    matrix.counts[("etcd-skip-0", "etcd-skip-1")] = 2
    matrix.refusals[("etcd-skip-1", "etcd-skip-0")] = 1
    matrix.accepted_streams[("etcd-skip-0", "etcd-skip-2")] = 1
    matrix.first_line = lines(SAN["3.5.1"]["etcd-noskip-0"])[0]
    matrix.first_refusal = next(x for x in lines(CN["3.4.23"]["etcd-skip-0"]) if "authentication failed" in x)
    members = [
        MemberReport(MEMBERS[0], "10.244.0.10", "10.96.0.10", 10, True, True, None, {"readiness": True}),
        MemberReport(MEMBERS[1], "10.244.0.11", None, 11, False, False, None, {"readiness": False}),
        MemberReport(
            MEMBERS[2],
            "10.244.0.12",
            "10.96.0.12",
            12,
            exit_code=2,
            probes={"readiness": False, "liveness": False},
            last_log_lines=["flag provided but not defined: -no-such-flag"],
        ),
    ]
    members[0].probes["liveness"] = True
    return LabReport(
        stack="skip",
        etcd_path="/x/bin/etcd",
        etcd_version="3.5.1",
        run_id="abc123",
        run_dir="/tmp/etcd-san-lab/abc123",
        kept=True,
        members=members,
        matrix=matrix,
        verdict="unhealthy",
        predicted="healthy",
        timings={
            "program": 0.25,
            "network": 0.5,
            "materialize": 0.75,
            "verdict": 1.25,
            "evidence": 0.5,
            "probes": 0.25,
            "teardown": 0.75,
            "total": 3.5,
        },
        etcdctl={"command": "kubectl exec ...", "ran": True, "ok": False, "output": "first\nsecond"},
        warnings=["a warning from the program"],
        timed_out=True,
    )


def test_json_carries_everything_the_human_report_shows():
    """Each line of the human report is matched to the JSON value(s) it shows; a line
    that nothing here claims (a new section without a JSON counterpart) fails too."""
    report = _full_report()
    doc = json.loads(json.dumps(report.as_dict()))
    unclaimed = [line for line in render(report).splitlines() if line.strip()]

    def take(match: str | re.Pattern[str]) -> str:
        found = [
            line
            for line in unclaimed
            if (match.search(line) if isinstance(match, re.Pattern) else line.strip() == match)
        ]
        assert len(found) == 1, (match, found)
        unclaimed.remove(found[0])
        return found[0]

    header = take(re.compile(r"^stack "))
    for value in (doc["stack"], doc["etcd"]["version"], Path(doc["etcd"]["path"]).name, doc["runId"]):
        assert value in header
    take(re.compile(r"^member\s+pod IP\s+service IP\s+health\s+leader\s+ready\s+live$"))
    for m in doc["members"]:
        health = "healthy" if m["healthy"] else "unhealthy"
        if m["exitCode"] is not None:
            health = f"exited {m['exitCode']}"
        live = m["probes"].get("liveness")
        row = re.split(r"\s{2,}", take(re.compile(rf"^{m['name']}\s+{re.escape(m['podIp'])}\s")))
        assert row == [
            m["name"],
            m["podIp"],
            m["serviceIp"] or "-",
            health,
            "leader" if m["leader"] else "-",
            "yes" if m["probes"].get("readiness") else "no",
            "none declared" if live is None else ("yes" if live else "no"),
        ]
        if m["lastLogLines"]:
            take(f"{m['name']} exited {m['exitCode']}; its last log lines:")
            assert [take(line) for line in m["lastLogLines"]]
    take("peer connections (row: receiving member, column: connecting member):")
    assert take(re.compile(r"^\s+" + r"\s+".join(doc["peerMatrix"]) + "$"))
    for receiver, row in doc["peerMatrix"].items():
        assert re.split(r"\s+", take(re.compile(rf"^{receiver}\s+[-a-z]+\s"))) == [receiver, *row.values()]
    for value, meaning in doc["peerMatrixLegend"].items():
        take(f"{value}: {meaning}")
    assert doc["peerMatrixLegend"] == {value: CELL_MEANINGS[value] for value in CELL_VALUES}
    take("first SAN rejection, verbatim:")
    take(doc["firstRejection"])
    take("first other peer-auth refusal, verbatim:")
    take(doc["firstRefusal"])
    take(f"etcdctl (the stack's healthCommand): {'ok' if doc['etcdctl']['ok'] else 'FAILED'}")
    for line in doc["etcdctl"]["output"].splitlines():
        take(line)
    for warning in doc["warnings"]:
        take(f"warning from the program: {warning}")
    verdict = take(re.compile(r"^verdict: "))
    assert f"verdict: {doc['verdict']} " in verdict and f"predicted: {doc['predicted']} " in verdict
    assert verdict.endswith("NOT AS PREDICTED") and doc["match"] is False
    assert doc["timedOut"] is True
    assert f"passed after {doc['timings']['verdict']:.2f} s" in take(re.compile(r"--timeout passed"))
    timing = take(re.compile(r"^time to verdict "))
    shown = {"verdict": "time to verdict {:.2f} s", "evidence": "({:.2f} s of it", "total": "total {:.2f} s"}
    for key, value in doc["timings"].items():
        if key != "probes":  # not in the human line; the JSON carries it as well
            assert shown.get(key, key + " {:.2f}").format(value) in timing, (key, timing)
    kept = take(re.compile(r"^kept: "))
    assert doc["runDir"] in kept
    assert unclaimed == [], "lines of the human report without a JSON counterpart"


# ---------------------------------------------------------------- health, exits


@pytest.mark.parametrize(
    ("state", "healthy"),
    [
        ({"a": (True, True), "b": (True, False), "c": (True, False)}, True),
        ({"a": (True, False), "b": (True, False), "c": (True, False)}, False),  # no leader (yet)
        ({"a": (True, True), "b": (True, True), "c": (True, False)}, False),  # two leaders
        ({"a": (True, True), "b": (False, False), "c": (True, False)}, False),  # one member not healthy
        ({"a": (True, True)}, True),
    ],
    ids=["one-leader", "no-leader", "two-leaders", "one-unhealthy", "single-member"],
)
def test_healthy_means_every_member_healthy_and_exactly_one_leader(state, healthy):
    assert settled(state) is healthy


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("a\nb\n\nc\nd\n", ["b", "c", "d"]),
        ("only\n", ["only"]),
        ("", []),
        # A flag error: etcd prints its usage text after the line that says why.
        (
            "flag provided but not defined: -no-such-flag\nUsage:\n\n"
            "  etcd [flags]\n    Start an etcd server.\n",
            ["flag provided but not defined: -no-such-flag"],
        ),
    ],
)
def test_an_exited_members_last_log_lines_say_why(log, expected):
    assert last_log_lines(log) == expected


# ---------------------------------------------------------------- real members


@pytest.mark.lab
def test_real_members_with_a_mismatching_cn_pin_are_unhealthy_early(etcd_binary):
    """Start the skip stack's members with `--peer-cert-allowed-cn=nobody` (their peer
    certificates carry the stack's CN): every pair refused, decided without the deadline."""
    program = evaluate("skip", etcd_binary, {})
    with Lab(program, etcd_binary) as lab:
        for container in lab.containers:
            pinned = [a for a in container.argv if a.startswith("--peer-cert-allowed-cn=")]
            assert pinned and pinned != ["--peer-cert-allowed-cn=nobody"], container.argv
            container.argv[:] = [
                "--peer-cert-allowed-cn=nobody" if a in pinned else a for a in container.argv
            ]
        lab.start()
        started = time.monotonic()
        verdict, matrix, state = lab.observe(30.0)
        elapsed = time.monotonic() - started
        logs = {c.pod: c.log_path.read_text() for c in lab.containers}
        assert lab.plan is not None
        namespaces, run_dir = set(lab.plan.namespaces), Path(lab.run_dir)
        pids = [p.pid for p in lab.processes.values()]
    assert (verdict, lab.timed_out) == ("unhealthy", False)
    assert elapsed < 10, f"decided after {elapsed:.1f} s"
    names = [c.pod for c in lab.containers]
    assert matrix.as_dict() == {r: {c: "-" if r == c else "refused" for c in names} for r in names}
    assert not any(healthy for healthy, _ in state.values())
    assert matrix.first_refusal is not None and matrix.first_refusal in "".join(logs.values())
    assert not namespaces & lab_namespaces() and not run_dir.exists()
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]
