"""Running one node (master, volume server, gateway) in the foreground: one function for all.

`run_node` does what every node's `kelp <node>` needs and nothing node-specific: logging to
stderr (the local cluster runner sends it to the node's log file), start with a one-line error
and exit code 1 when the node cannot start (a taken port, a bad data dir, a newer schema),
a pid file while it serves (--pid-file), SIGINT and SIGTERM as a clean stop, SIGHUP as a
reload (the admitted CURVE keys; the master's exports too, through its `reload()`), a stop
when the node ends by itself, and the exit code.
The node's own HTTP /status, /metrics and health service are started by its `start()`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, Protocol

from cluster.common.config import ConfigError
from cluster.common.security import check_bind

log = logging.getLogger("kelp.node")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Node(Protocol):
    def start(self) -> Node: ...
    def stop(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def run_node(kind: str, opts: Any, make: Callable[[Any], Node],
             start_errors: tuple[type[BaseException], ...] = (OSError, ValueError)) -> int:
    """Build `make(opts)`, start it, serve until SIGINT/SIGTERM or until it stops by itself.

    `opts` is the node's options (name, ip, tls_dir, insecure are read here). A plain
    transport on a non-loopback address without --insecure is refused (exit code 2);
    `start_errors`: what a person must fix before the node can run (reported in one line,
    exit code 1); anything else is a bug and keeps its traceback.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    name = opts.name
    try:
        check_bind(f"{kind} {name}", opts.ip, opts.tls_dir, opts.insecure)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    try:
        node = make(opts).start()
    except start_errors as e:
        log.error("%s %s cannot start: %s", kind, name, e)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s %s: %s, stopping", kind, name, signal.Signals(signum).name)
        stop.set()

    def on_reload(_signum: int, _frame: object) -> None:
        # A node with more to re-read than its transport's keys (the master's exports) says
        # so with a reload() of its own, which reloads the transport too.
        try:
            reload = getattr(node, "reload", None)
            if reload is not None:
                reload()
                return
            transport = getattr(node, "transport", None)
            if transport is not None:
                transport.reload()
        except Exception:
            log.exception("%s %s: reload failed", kind, name)

    pid_file = getattr(opts, "pid_file", None)
    if pid_file:
        with open(pid_file, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_reload)
    try:
        # Short waits: the main thread must wake up to run the signal handler.
        while not stop.wait(0.5) and not node.wait(0):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        node.stop()
        if pid_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pid_file)
    return 0
