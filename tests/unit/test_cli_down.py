"""`kelp down` finishes its job whatever one step reports: every node is stopped even when the
unmount fails, a pid file the mount process already removed is no error, and each failure is
one line at the end with exit code 1. No process is started: the nodes' stop is recorded."""
from __future__ import annotations

import argparse

import pytest

from tools import commands
from tools.local_cluster import ClusterLayout, LocalCluster, NodeSpec


def make_state(tmp_path, mountpoint: str | None):
    data = tmp_path / "data"
    cluster = LocalCluster(ClusterLayout(data_dir=str(data)))
    cluster.nodes = {n: NodeSpec(kind=k, name=n, args=[]) for n, k in
                     (("m0", "master"), ("v0", "volume"), ("v1", "volume"), ("g0", "gateway"))}
    cluster.save()
    (data / "pids").mkdir()
    if mountpoint is not None:
        (data / "mountpoint").write_text(mountpoint)
    return data


@pytest.fixture
def stopped(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(LocalCluster, "stop_node", lambda self, name: calls.append(name))
    return calls


@pytest.mark.timeout(10)
def test_down_stops_every_node_when_the_unmount_fails(tmp_path, monkeypatch, stopped, capsys):
    data = make_state(tmp_path, str(tmp_path / "mnt"))
    monkeypatch.setattr(commands.mounts, "unmount", lambda path, lazy=True: False)
    code = commands.down(argparse.Namespace(data=str(data)))
    assert code == 1
    assert stopped == ["g0", "v0", "v1", "m0"]  # gateway first, master last
    errs = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kelp:")]
    assert len(errs) == 1, errs
    assert "could not unmount" in errs[0], errs
    assert (data / "mountpoint").exists()  # kept, so a second `kelp down` tries again


@pytest.mark.timeout(10)
def test_down_with_the_mount_pid_file_already_gone_is_no_error(tmp_path, monkeypatch, stopped,
                                                               capsys):
    """The mount process removes its own pid file as it exits; when it has done so before
    `kelp down` looks, down still succeeds and stops every node."""
    data = make_state(tmp_path, str(tmp_path / "mnt"))
    monkeypatch.setattr(commands.mounts, "unmount", lambda path, lazy=True: True)
    assert not (data / "pids" / "mount.pid").exists()
    assert commands.down(argparse.Namespace(data=str(data))) == 0
    assert stopped == ["g0", "v0", "v1", "m0"]
    assert not (data / "mountpoint").exists()
    assert "kelp:" not in capsys.readouterr().err


@pytest.mark.timeout(10)
def test_down_removes_a_stale_mount_pid_file(tmp_path, monkeypatch, stopped):
    data = make_state(tmp_path, str(tmp_path / "mnt"))
    (data / "pids" / "mount.pid").write_text("999999999\n")  # no such process
    monkeypatch.setattr(commands.mounts, "unmount", lambda path, lazy=True: True)
    assert commands.down(argparse.Namespace(data=str(data))) == 0
    assert not (data / "pids" / "mount.pid").exists()


@pytest.mark.timeout(10)
def test_down_without_state_is_one_line(tmp_path):
    with pytest.raises(commands.QuietError, match="no cluster state"):
        commands.down(argparse.Namespace(data=str(tmp_path / "none")))
