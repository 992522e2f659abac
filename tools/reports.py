"""Rendering of `kelp fsck` and `kelp vacuum` results with rich: a progress bar while fsck runs,
then summary and detail tables. Presentation only; the findings come from tools/fsck.py and
tools/vacuum.py.
"""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tools import fsck as fsck_mod
from tools.commands import human
from tools.fsck import FsckReport, RepairReport
from tools.vacuum import VacuumRow

MAX_DETAIL_ROWS = 200


class RichProgress(fsck_mod.Progress):
    """fsck's progress callbacks on a rich progress bar (on stderr, transient)."""

    def __init__(self, console: Console):
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                             transient=True)
        self._task = None

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.stop()

    def start(self, description: str, total: int) -> None:
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(description, total=max(total, 1))
        if total == 0:
            self._bar.advance(self._task, 1)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, n)


def _capped(rows: list, console: Console, what: str) -> list:
    if len(rows) > MAX_DETAIL_ROWS:
        console.print(f"[dim]({len(rows) - MAX_DETAIL_ROWS} more {what} not shown)[/dim]")
        return rows[:MAX_DETAIL_ROWS]
    return rows


def print_fsck(report: FsckReport, console: Console) -> None:
    summary = Table(title=f"kelp fsck {report.path}", show_header=False)
    summary.add_column("what")
    summary.add_column("count", justify="right")
    bad = "[bold red]"
    rows = [
        ("files checked", report.files, False),
        ("of them inline (CRC checked by the master)", report.inline_files, False),
        ("chunks", report.chunks, False),
        ("needles", report.needles, False),
        ("replicas checked", report.replicas_checked, False),
        ("damaged replicas", len(report.damaged), bool(report.damaged)),
        ("damaged files", len(report.damaged_files), bool(report.damaged_files)),
        ("needles (or inline files) with no intact copy", len(report.lost), bool(report.lost)),
        ("under-replicated volumes", len(report.under_replicated),
         bool(report.under_replicated)),
        ("volumes on no server", len(report.missing_volumes), bool(report.missing_volumes)),
        ("needles shared by two files", len(report.shared), bool(report.shared)),
        ("orphan needles", len(report.orphans), bool(report.orphans)),
        ("unreachable replicas", len(report.unreachable), bool(report.unreachable)),
    ]
    for name, count, is_bad in rows:
        summary.add_row(name, f"{bad}{count}[/]" if is_bad else str(count))
    summary.caption = f"checked in {report.seconds:.2f}s"
    console.print(summary)

    if report.damaged:
        t = Table(title="damaged replicas")
        for col in ("file", "fid", "replica", "problem", "detail"):
            t.add_column(col)
        for d in _capped(report.damaged, console, "damaged replicas"):
            t.add_row(d.path, d.fid, d.server, d.status, d.detail)
        console.print(t)
    if report.lost:
        t = Table(title="needles with no intact copy (data lost unless a replica comes back)")
        t.add_column("file")
        t.add_column("fid")
        for path, fid in _capped(report.lost, console, "lost needles"):
            t.add_row(path, fid)
        console.print(t)
    if report.under_replicated:
        t = Table(title="under-replicated volumes")
        for col in ("volume", "copies wanted", "live copies on", "down"):
            t.add_column(col)
        for u in report.under_replicated:
            t.add_row(str(u.volume_id), str(u.replication), ", ".join(u.live) or "-",
                      ", ".join(u.dead) or "-")
        console.print(t)
    if report.missing_volumes:
        console.print(f"{bad}volumes used by files but held by no server:[/] "
                      + ", ".join(map(str, report.missing_volumes)))
    if report.shared:
        t = Table(title="needles referenced by more than one file")
        t.add_column("fid")
        t.add_column("files")
        for fid, paths in _capped(report.shared, console, "shared needles"):
            t.add_row(fid, ", ".join(paths))
        console.print(t)
    if report.orphans:
        t = Table(title="orphan needles (no file references them)")
        for col in ("fid", "bytes", "on"):
            t.add_column(col)
        for o in _capped(report.orphans, console, "orphans"):
            t.add_row(o.fid, str(o.size), ", ".join(o.servers))
        console.print(t)
    if report.unreachable:
        t = Table(title="replicas that could not be checked")
        for col in ("server", "volume", "error"):
            t.add_column(col)
        for server, vid, err in report.unreachable:
            t.add_row(server, str(vid), err)
        console.print(t)
    if report.clean:
        console.print("[bold green]clean[/]: every chunk is intact on every replica")


def print_repair(r: RepairReport, console: Console) -> None:
    t = Table(title="kelp fsck --repair", show_header=False)
    t.add_column("what")
    t.add_column("result", justify="right")
    t.add_row("volumes copied", str(len(r.volumes_copied)))
    t.add_row("needles re-replicated", str(r.needles_copied))
    t.add_row("bytes copied", human(r.bytes_copied))
    t.add_row("orphans queued for deletion", str(r.orphans_queued))
    if r.orphans_referenced:
        t.add_row("orphans referenced by now (kept)", str(r.orphans_referenced))
    if r.orphans_too_recent:
        t.add_row("orphans too recent to delete (kept)", f"[yellow]{r.orphans_too_recent}[/]")
    t.add_row("failures", f"[bold red]{len(r.failures)}[/]" if r.failures else "0")
    console.print(t)
    for vid, source, target, needles, nbytes in r.volumes_copied:
        console.print(f"volume {vid}: copied {needles} needles ({human(nbytes)}) "
                      f"{source} -> {target}")
    for line in r.failures:
        console.print(f"[red]not repaired:[/] {line}")


def print_vacuum(rows: list[VacuumRow], threshold: float, console: Console) -> None:
    if not rows:
        console.print(f"no volume has a garbage ratio of {threshold:.0%} or more"
                      if threshold else "no volume is past the master's vacuum threshold")
        return
    t = Table(title="kelp vacuum")
    errors = any(r.error for r in rows)
    cols = [("volume", "right"), ("server", "left"), ("garbage", "right"),
            ("before", "right"), ("after", "right"), ("reclaimed", "right"),
            ("revision", "right"), ("time", "right")] + ([("error", "left")] if errors else [])
    for col, just in cols:
        t.add_column(col, justify=just)
    for r in rows:
        cells = [str(r.volume_id), r.server, f"{r.garbage_ratio:.0%}",
                 human(r.size_before) if not r.error else "-",
                 human(r.size_after) if not r.error else "-",
                 human(r.freed) if not r.error else "-",
                 str(r.compact_revision) if not r.error else "-", f"{r.seconds:.2f}s"]
        if errors:
            cells.append(f"[red]{r.error}[/]" if r.error else "")
        t.add_row(*cells)
    total = sum(r.freed for r in rows)
    t.caption = f"{human(total)} reclaimed"
    console.print(t)
