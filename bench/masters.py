"""Metadata rates with the PostgreSQL store and several masters, beside the SQLite store, in
one run: `python -m bench.masters [--runs 3] [--files 3000]`.

Rows (docs/scaling.md quotes them):
* sqlite, 1 master, 1 mount: the embedded default, the baseline;
* postgresql, 1 master, 1 mount: what the shared store costs one master (target >= 0.7x);
* sqlite, 1 master, 3 mounts: how far one master goes with three clients;
* postgresql, 3 masters, 3 mounts (each mount on its own master): the scale-out row
  (target >= 1.6x the first row).
Each mount creates its share of `--files` files of 4 KiB (kept inline: a create is metadata
only, the master's path end to end) in a directory of its own, all mounts at once; then every
mount is made again (cold caches) and stats its files. Rates are files per second summed over
the mounts, medians of the runs. PostgreSQL is a private, durable server (tools/pglocal.py):
fsync on, synchronous_commit on, as a production database would be.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.targets import ClusterMount
from bench.workloads import run_parallel
from tools.local_cluster import REPO_ROOT, ClusterLayout, LocalCluster
from tools.pglocal import LocalPostgres

CONFIGS = [
    ("sqlite, 1 master, 1 mount", "sqlite", 1, 1),
    ("postgresql, 1 master, 1 mount", "postgresql", 1, 1),
    ("sqlite, 1 master, 3 mounts", "sqlite", 1, 3),
    ("postgresql, 3 masters, 3 mounts", "postgresql", 3, 3),
]
DATA = os.urandom(4096)


def _create(d: Path, n: int) -> None:
    d.mkdir()
    for i in range(n):
        with open(d / f"f{i:05d}", "wb") as fh:
            fh.write(DATA)


def _stat(d: Path, n: int) -> None:
    for i in range(n):
        if os.stat(d / f"f{i:05d}").st_size != len(DATA):
            raise AssertionError(f"{d}/f{i:05d}: wrong size")


def one_run(work: Path, store: str, n_masters: int, n_mounts: int, files: int,
            pg: LocalPostgres | None, run: int) -> dict[str, float]:
    meta = pg.create_database(f"b{run}_{n_masters}_{n_mounts}") if store == "postgresql" else ""
    layout = ClusterLayout(data_dir=str(work / "cluster"), volumes=1, master_port=0,
                           master_grpc_port=0, master_zmq_port=0, volume_port=0,
                           volume_grpc_port=0, gateway_port=0, gateway_http_port=0,
                           masters=n_masters, meta=meta)
    cluster = LocalCluster(layout)
    cluster.plan()
    mounts: list[ClusterMount] = []
    try:
        cluster.start(timeout=90)
        masters = [cluster.nodes[n].grpc_address for n in cluster.master_names()]
        mounts = [ClusterMount(cluster, work / f"mnt{k}", masters[k % len(masters)])
                  for k in range(n_mounts)]
        for m in mounts:
            m.mount()
        share = files // n_mounts
        seconds = run_parallel([lambda m=m, k=k: _create(m.mountpoint / f"d{k}", share)
                             for k, m in enumerate(mounts)])
        out = {"create (files/s)": share * n_mounts / seconds}
        for m in mounts:
            m.cold()
        seconds = run_parallel([lambda m=m, k=k: _stat(m.mountpoint / f"d{k}", share)
                             for k, m in enumerate(mounts)])
        out["stat cold (files/s)"] = share * n_mounts / seconds
        return out
    finally:
        for m in mounts:
            m.unmount()
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=3000, help="files per run, over all mounts")
    ap.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "masters.json"))
    args = ap.parse_args(argv)
    results: dict[str, dict[str, list[float]]] = {label: {} for label, *_ in CONFIGS}
    with LocalPostgres(durable=True) as pg, tempfile.TemporaryDirectory(prefix="kelp-bm-") as t:
        for run in range(args.runs):
            for i, (label, store, n_masters, n_mounts) in enumerate(CONFIGS):
                work = Path(t) / f"r{run}c{i}"
                got = one_run(work, store, n_masters, n_mounts, args.files, pg, run)
                for metric, value in got.items():
                    results[label].setdefault(metric, []).append(value)
                print(f"run {run + 1}: {label}: "
                      + ", ".join(f"{k} {v:,.0f}" for k, v in got.items()), flush=True)
    medians = {label: {k: statistics.median(v) for k, v in rows.items()}
               for label, rows in results.items()}
    base = medians[CONFIGS[0][0]]
    lines = ["| configuration | create (files/s) | stat cold (files/s) | create ratio | "
             "stat ratio |", "|---|---:|---:|---:|---:|"]
    for label, row in medians.items():
        lines.append(f"| {label} | {row['create (files/s)']:,.0f} | "
                     f"{row['stat cold (files/s)']:,.0f} | "
                     f"{row['create (files/s)'] / base['create (files/s)']:.2f} | "
                     f"{row['stat cold (files/s)'] / base['stat cold (files/s)']:.2f} |")
    print("\n".join(lines))
    Path(args.out).write_text(json.dumps({"runs": results, "medians": medians,
                                          "files": args.files, "table": lines}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
