"""Member crashes under writes, and a clean stop: real etcd (3.5.1, and 3.4.23 when
available) with the SAN check skipped, writes through the Service addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.etcd_binary import EtcdBinary
from lab.faults import FaultsReport, run_faults
from tests.lab_support import lab_namespaces

pytestmark = pytest.mark.lab

MEMBERS = ["etcd-skip-0", "etcd-skip-1", "etcd-skip-2"]
KEYS = 300


@pytest.fixture(scope="module")
def report(etcd_binary: EtcdBinary) -> FaultsReport:
    return run_faults("skip", etcd_binary, target="both", keys=KEYS)


@pytest.mark.parametrize("target", ["follower", "leader"])
def test_no_acknowledged_write_is_lost_when_a_member_is_killed(report, target):
    phase = report.phase(target)
    assert phase.victim in MEMBERS
    assert phase.victim_was_leader == (target == "leader")
    assert phase.killed_exit == -9  # SIGKILL, no chance to flush anything
    assert (phase.attempted, phase.acknowledged, phase.failed) == (KEYS, KEYS, [])
    assert phase.lost == []
    # Every member, the restarted one included, has every acknowledged key.
    assert {c.member: (c.keys, c.missing) for c in phase.copies} == dict.fromkeys(MEMBERS, (KEYS, 0))
    # The writer started on the victim's Service: the kill broke its connection.
    assert phase.error_samples and phase.error_samples[0].startswith(f"{phase.victim}: ")
    assert phase.ok, phase.as_dict()


@pytest.mark.parametrize("target", ["follower", "leader"])
def test_unavailability_and_catch_up_are_measured(report, target):
    phase = report.phase(target)
    for value in (phase.unavailable_seconds, phase.longest_gap_seconds, phase.catch_up_seconds):
        assert isinstance(value, float) and value > 0, phase.as_dict()
    assert phase.unavailable_seconds <= phase.longest_gap_seconds
    assert phase.catch_up_seconds < 20


def test_losing_the_leader_costs_an_election(report):
    follower, leader = report.phase("follower"), report.phase("leader")
    # Killing a follower changes no leadership; killing the leader needs an election,
    # which a survivor starts only after its election timeout (1 s by default).
    assert follower.leader_after_kill not in (None, follower.victim)
    assert leader.leader_after_kill not in (None, leader.victim)
    assert leader.leader_after_kill_seconds > 0.5, leader.as_dict()
    # No write commits without a leader: the window covers the election (the metric is
    # polled, so allow for one poll's lag).
    assert leader.unavailable_seconds + 0.25 >= leader.leader_after_kill_seconds, leader.as_dict()
    assert leader.unavailable_seconds > follower.unavailable_seconds


def test_sigterm_stops_every_member_within_the_grace_period(report):
    stop = report.clean_stop
    assert stop is not None
    assert stop.grace_seconds == 30
    assert stop.killed == []
    assert set(stop.exits) == set(MEMBERS) and all(code is not None for code in stop.exits.values())
    assert 0 < stop.seconds <= stop.grace_seconds
    assert report.ok


def test_nothing_is_left_behind(report):
    assert not [n for n in lab_namespaces() if n.startswith(f"esl-{report.run_id}-")]
    assert not list(Path("/etc/netns").glob(f"esl-{report.run_id}-*"))
    assert not (Path("/tmp/etcd-san-lab") / report.run_id).exists()
