"""Run the benchmarks on several targets in one go and report medians side by side.

    python -m bench.run [--runs 3] [--targets local,passthrough,seaweedfs,juicefs,kelpfs] [--quick]
                        [--only core|mount] [--timeout SECONDS] [--keep]

First the per-call floors are measured (bench/floors.py: a gRPC unary call, a ZMQ round trip
and a unix socket round trip between two processes; a 4 KiB fdatasync and a SQLite FULL commit
on the work dir's disk; one gRPC stream of 4 MiB replies) while nothing else of ours runs.
All targets are started next and stay up for the whole run; then, --runs times over, every
workload runs on every target (target after target within a round, so slow drift on the
machine hits all of them alike). A workload that fails or hangs (a watchdog kills the mount
after --timeout) is recorded as an error for that target and the run goes on. At the end:
a table of medians on the terminal, the raw numbers in bench/results/latest.json and, for a
full run, a markdown table with the machine's facts in docs/bench.md (between the results
markers; the text around them is kept). --quick uses small sizes for a smoke run and writes
bench/results/quick.json only.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import workloads as W
from bench.floors import describe as describe_floors
from bench.floors import measure_floors
from bench.targets import TARGETS, KelpTarget, Target, drop_page_cache, host_facts

BENCH_DIR = Path(__file__).resolve().parent
DOC = BENCH_DIR.parent / "docs" / "bench.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
# Ratio columns (a / b of the medians), each shown when both targets are in the run.
RATIOS = (("kelpfs", "seaweedfs"), ("kelpfs", "juicefs"), ("kelpfs", "passthrough"),
          ("kelpfs-tls", "kelpfs"))
# The other distributed file systems: "kelpfs/best peer" divides by the better of them on each
# row (shown when all of them are in the run), placed after the last ratio to a peer.
PEERS = ("seaweedfs", "juicefs")
BEST_PEER = "kelpfs/best peer"
FLOOR_CALLS = 2000

console = Console(stderr=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3, help="repetitions; the median is reported")
    p.add_argument("--targets", default="local,passthrough,seaweedfs,juicefs,kelpfs",
                   help="comma-separated, from: " + ",".join(TARGETS))
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--only", choices=["core", "mount"],
                   help="only the client-library (core, KelpFS) or the mount workloads")
    p.add_argument("--timeout", type=float, default=0,
                   help="seconds one workload may take before its mount is killed "
                        "(default 1500, 120 with --quick)")
    p.add_argument("--workdir", default=None, help="where the temp dir goes (default $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown or not args.targets:
        p.error(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    args.timeout = args.timeout or (120 if args.quick else 1500)
    return args


def workloads_for(name: str, only: str | None) -> list:
    mount = W.MOUNT_WORKLOADS if only != "core" else []
    core = W.CORE_WORKLOADS if only != "mount" and name == "kelpfs" else []
    return mount + core


def floors_or_error(work: Path) -> tuple[dict[str, float], str]:
    """measure_floors(), or ({}, why) when it fails: the floors must not cost the run."""
    try:
        floors = measure_floors(FLOOR_CALLS, workdir=str(work))
    except Exception as e:
        console.print(f"[red]per-call floors not measured: {type(e).__name__}: {e}[/red]")
        return {}, f"{type(e).__name__}: {e}"
    console.print("per-call floors: " + describe_floors(floors))
    return {k: round(v, 1) for k, v in floors.items()}, ""


def machine_facts(targets: dict[str, Target], sizes: W.Sizes, source: tuple[int, int],
                  args: argparse.Namespace, can_drop: bool,
                  floors: tuple[dict[str, float], str] = ({}, "")) -> dict:
    versions = {}
    for name, t in targets.items():
        try:
            versions[name] = t.version()
        except Exception as e:
            versions[name] = f"unknown ({e})"
    return {
        **host_facts(),
        "kelpfs_commit": versions.get("kelpfs") or KelpTarget().version(),
        "seaweedfs_version": versions.get("seaweedfs", ""),
        "juicefs_version": versions.get("juicefs", ""),
        "runs": args.runs, "quick": args.quick, "sizes": sizes.__dict__,
        "source_tree": {"files": source[0], "bytes": source[1]},
        "page_cache_dropped": can_drop,
        "floors_us": floors[0], "floors_calls": FLOOR_CALLS,
        **({"floors_error": floors[1]} if floors[1] else {}),
    }


def run_one(target: Target, fn, ctx: W.Context, timeout: float) -> dict[str, float]:
    """Run one workload under a watchdog that aborts the target (kills its mount) on hang."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        target.abort()

    dog = threading.Timer(timeout, fire)
    dog.daemon = True
    dog.start()
    try:
        return fn(ctx)
    except Exception as e:
        if fired.is_set():
            raise TimeoutError(f"{fn.__name__} took more than {timeout:.0f}s; mount killed") from e
        raise
    finally:
        dog.cancel()


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def ratio_columns(names: list[str]) -> list[str]:
    cols = [f"{a}/{b}" for a, b in RATIOS if a in names and b in names]
    if "kelpfs" in names and all(p in names for p in PEERS):
        last_peer = max(cols.index(f"kelpfs/{p}") for p in PEERS)
        cols.insert(last_peer + 1, BEST_PEER)
    return cols


def best_peer(medians: dict[str, float | None], higher_is_better: bool,
              peers: tuple[str, ...] = PEERS) -> str | None:
    """The peer with the better median on one row: the highest where higher is better (rates),
    the lowest where lower is better (times); None when no peer has a number. A tie goes to
    the peer named first."""
    have = [p for p in peers if medians.get(p) is not None]
    if not have:
        return None
    pick = max if higher_is_better else min
    return pick(have, key=lambda p: medians[p])


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or zero (as for every ratio column)."""
    return a / b if a and b else None


def summarise(results: dict[str, dict[str, list[float]]], names: list[str]) -> list[dict]:
    rows = []
    for metric, meta in W.METRICS.items():
        med = {n: statistics.median(results[n][metric]) if results[n].get(metric) else None
               for n in names}
        if all(v is None for v in med.values()):
            continue
        row = {"workload": metric, "better": "higher" if meta.higher_is_better else "lower",
               "medians": med}
        for col in ratio_columns(names):
            if col == BEST_PEER:
                peer = best_peer(med, meta.higher_is_better)
                row["best peer"] = peer
                row[col] = ratio(med["kelpfs"], med[peer]) if peer else None
            else:
                a, b = col.split("/")
                row[col] = ratio(med.get(a), med.get(b))
        rows.append(row)
    return rows


def print_table(rows: list[dict], names: list[str], errors: dict[str, list[str]]) -> None:
    ratios = ratio_columns(names)
    table = Table(title="medians", show_lines=False)
    table.add_column("workload")
    table.add_column("better")
    for n in names:
        table.add_column(n, justify="right")
    for col in ratios:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["workload"], r["better"], *[fmt(r["medians"][n]) for n in names],
                      *[fmt(r[col]) for col in ratios])
    Console(width=max(Console().width, 170)).print(table)
    for n, errs in errors.items():
        for e in errs:
            console.print(f"[red]{n}: {e}[/red]")


def floors_line(facts: dict) -> str:
    floors = facts.get("floors_us") or {}
    if not floors:
        return ("Per-call floors: not measured ("
                f"{facts.get('floors_error', 'no numbers')}).")
    return (f"Per-call floors (round trips between two processes: mean of "
            f"{facts.get('floors_calls', FLOOR_CALLS):,} calls; see bench/floors.py): "
            f"{describe_floors(floors)}.")


def markdown(rows: list[dict], names: list[str], facts: dict,
             errors: dict[str, list[str]]) -> str:
    ratios = ratio_columns(names)
    juicefs = f", JuiceFS `{facts['juicefs_version']}`" if facts.get("juicefs_version") else ""
    lines = [f"Measured {facts['date']} on {facts['nproc']} CPUs ({facts['cpu']}), "
             f"{facts['memory_gib']} GiB RAM, Linux {facts['kernel']}, Python {facts['python']}; "
             f"KelpFS commit `{facts['kelpfs_commit']}`, SeaweedFS `{facts['seaweedfs_version']}`"
             f"{juicefs}; median of {facts['runs']} runs; cp -r source tree: "
             f"{facts['source_tree']['files']} files, "
             f"{facts['source_tree']['bytes'] / W.MiB:.0f} MiB; page cache dropped before cold "
             f"reads: {'yes' if facts['page_cache_dropped'] else 'NO (not root)'}.", "",
             floors_line(facts), "",
             "| " + " | ".join(["workload", "better", *names, *ratios]) + " |",
             "|---|---|" + "---:|" * (len(names) + len(ratios))]
    for r in rows:
        cells = [r["workload"], r["better"], *(fmt(r["medians"][n]) for n in names),
                 *(fmt(r[col]) for col in ratios)]
        lines.append("| " + " | ".join(cells) + " |")
    errs = [f"- {n}: {e}" for n, es in errors.items() for e in es]
    if errs:
        lines += ["", "Failures (no number is reported for these):", "", *errs]
    return "\n".join(lines) + "\n"


def write_doc(text: str) -> None:
    block = f"{BEGIN}\n{text}{END}"
    if DOC.exists():
        doc = DOC.read_text()
        if BEGIN in doc and END in doc:
            doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
        else:
            doc = doc.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    else:
        doc = "# Benchmarks\n\n## Results\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = W.QUICK if args.quick else W.FULL
    work = Path(tempfile.mkdtemp(prefix="kelp-bench-", dir=args.workdir))
    names = args.targets
    if args.only == "core":
        names = [n for n in names if n == "kelpfs"] or ["kelpfs"]
    results: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    errors: dict[str, list[str]] = {n: [] for n in names}
    targets: dict[str, Target] = {}
    dirs: dict[str, Path | None] = {}
    can_drop = drop_page_cache()
    if not can_drop:
        console.print("[yellow]cannot drop the page cache (not root): cold reads may be "
                      "warm[/yellow]")
    floors = floors_or_error(work)
    try:
        source = (0, 0)
        if args.only != "core":
            t0 = time.monotonic()
            source = W.build_source_tree(work / "source", sizes.tree_bytes,
                                          sizes.tree_files)
            console.print(f"source tree: {source[0]} files, {source[1] / W.MiB:.0f} MiB "
                          f"({time.monotonic() - t0:.1f}s)")
        for n in names:
            t = KelpTarget(mount=args.only != "core") if n == "kelpfs" else TARGETS[n]()
            targets[n] = t
            try:
                dirs[n] = t.setup(work)
                console.print(f"{n}: up at {dirs[n]}")
            except Exception as e:
                errors[n].append(f"setup failed: {e}")
                console.print(f"[red]{n}: setup failed: {e}[/red]")
        facts = machine_facts(targets, sizes, source, args, can_drop, floors)
        for run in range(args.runs):
            for n, t in targets.items():
                if errors[n] and errors[n][0].startswith("setup failed"):
                    continue
                for fn in workloads_for(n, args.only):
                    mount_workload = fn not in W.CORE_WORKLOADS
                    base = dirs[n] if mount_workload else work / "core-local"
                    label = f"run {run + 1}/{args.runs}: {n} {fn.__name__}"
                    if base is None:
                        err = f"{fn.__name__}: mount failed: {getattr(t, 'mount_error', '')}"
                        if err not in errors[n]:
                            errors[n].append(err)
                        continue
                    root = base / f"r{run}-{fn.__name__}"
                    t0 = time.monotonic()
                    try:
                        root.mkdir(parents=True)
                        ctx = W.Context(root, sizes, t.cold, work / "source", kelp=t)
                        out = run_one(t, fn, ctx, args.timeout)
                    except Exception as e:
                        msg = f"{fn.__name__} (run {run + 1}): {type(e).__name__}: {e}"
                        errors[n].append(msg)
                        console.print(f"[red]{label}: {msg}[/red]")
                        console.print(traceback.format_exc(limit=3), markup=False)
                        if mount_workload and n != "local":
                            try:  # get a working mount back for the next workload
                                t.abort()
                                t.cold()
                            except Exception as e2:
                                errors[n].append(f"remount after failure failed: {e2}")
                                dirs[n] = None
                        continue
                    finally:
                        shutil.rmtree(root, ignore_errors=True)
                    for k, v in out.items():
                        results[n].setdefault(k, []).append(v)
                    console.print(f"{label} ({time.monotonic() - t0:.1f}s): "
                                  + ", ".join(f"{k}={fmt(v)}" for k, v in out.items()))
    finally:
        for n, t in targets.items():
            try:
                t.teardown()
            except Exception as e:
                errors[n].append(f"teardown failed: {e}")
        if args.keep:
            console.print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = summarise(results, names)
    print_table(rows, names, errors)
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    raw = out_dir / ("quick.json" if args.quick else "latest.json")
    raw.write_text(json.dumps({"facts": facts, "targets": names, "results": results,
                               "summary": rows, "errors": errors}, indent=1))
    console.print(f"raw results: {raw}")
    if not args.quick:
        write_doc(markdown(rows, names, facts, errors))
        console.print(f"table: {DOC}")
    return 1 if any(errors.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
