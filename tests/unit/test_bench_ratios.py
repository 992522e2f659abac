"""bench/run.py: the ratio columns, and which peer "kelpfs/best peer" divides by on each row."""
from __future__ import annotations

import pytest

from bench import run

ALL = ["local", "passthrough", "seaweedfs", "juicefs", "kelpfs"]


def test_best_peer_is_the_higher_rate_and_the_lower_time():
    med = {"seaweedfs": 400.0, "juicefs": 900.0, "kelpfs": 200.0}
    assert run.best_peer(med, higher_is_better=True) == "juicefs"
    assert run.best_peer(med, higher_is_better=False) == "seaweedfs"


def test_best_peer_skips_a_peer_without_a_number_and_is_none_without_any():
    assert run.best_peer({"seaweedfs": None, "juicefs": 3.0}, True) == "juicefs"
    assert run.best_peer({"seaweedfs": 5.0}, False) == "seaweedfs"
    assert run.best_peer({"seaweedfs": None, "juicefs": None, "kelpfs": 1.0}, True) is None


def test_best_peer_column_only_when_kelpfs_and_every_peer_ran():
    assert run.ratio_columns(ALL) == ["kelpfs/seaweedfs", "kelpfs/juicefs", "kelpfs/best peer",
                                      "kelpfs/passthrough"]
    assert run.ratio_columns(["seaweedfs", "kelpfs"]) == ["kelpfs/seaweedfs"]
    assert run.ratio_columns(["seaweedfs", "juicefs"]) == []


def test_summarise_divides_by_the_better_peer_in_each_rows_direction():
    names = ["seaweedfs", "juicefs", "kelpfs"]
    results = {
        "seaweedfs": {"small files: create (files/s)": [400.0], "cp -r tree (s)": [19.0]},
        "juicefs": {"small files: create (files/s)": [800.0], "cp -r tree (s)": [25.0]},
        "kelpfs": {"small files: create (files/s)": [200.0], "cp -r tree (s)": [38.0],
                   "client upload big (MB/s)": [260.0]},
    }
    rows = {r["workload"]: r for r in run.summarise(results, names)}

    create = rows["small files: create (files/s)"]
    assert create["best peer"] == "juicefs"
    assert create["kelpfs/best peer"] == pytest.approx(200 / 800)
    assert create["kelpfs/seaweedfs"] == pytest.approx(0.5)
    assert create["kelpfs/juicefs"] == pytest.approx(0.25)

    cp = rows["cp -r tree (s)"]  # seconds: the faster peer is the one with less
    assert cp["better"] == "lower"
    assert cp["best peer"] == "seaweedfs"
    assert cp["kelpfs/best peer"] == pytest.approx(38 / 19)

    core = rows["client upload big (MB/s)"]  # KelpFS only: no peer, no ratio
    assert core["best peer"] is None
    assert core["kelpfs/best peer"] is None


def test_markdown_has_the_new_columns_and_names_the_juicefs_version():
    names = ["seaweedfs", "juicefs", "kelpfs"]
    results = {n: {"rename (renames/s)": [v]} for n, v in
               zip(names, (900.0, 300.0, 450.0), strict=True)}
    facts = {"date": "d", "nproc": 2, "cpu": "c", "memory_gib": 1, "kernel": "k",
             "python": "p", "kelpfs_commit": "abc", "seaweedfs_version": "sw",
             "juicefs_version": "juicefs version 1.4.2", "runs": 1,
             "source_tree": {"files": 1, "bytes": 1 << 20}, "page_cache_dropped": True}
    text = run.markdown(run.summarise(results, names), names, facts, {})
    assert "JuiceFS `juicefs version 1.4.2`" in text
    assert ("| workload | better | seaweedfs | juicefs | kelpfs | kelpfs/seaweedfs | "
            "kelpfs/juicefs | kelpfs/best peer |") in text
    assert "| rename (renames/s) | higher | 900 | 300 | 450 | 0.5 | 1.5 | 0.5 |" in text
