"""The masters of one PostgreSQL database: who they are, which one leads, and the callback
breaks they pass each other.

Any number of masters serve one namespace (docs/scaling.md). What must happen in one place
(placement: Assign and growing volumes; the reaper; vacuum) happens on the leader. The leader
is the master holding a session-level PostgreSQL advisory lock on its link connection: the
server releases it the moment that connection ends, which is when the process dies (the
kernel closes its socket) or, for a host cut off, when TCP keepalives give up (a few seconds:
set below). Every other master tries the lock every TICK_S, so a new leader takes over
within about a second of the server noticing.

Each master keeps a row in `masters` (pg_schema.py), refreshed every TICK_S; a row older than
ALIVE_S is a dead master. Other masters hear of it there: mounts that held callbacks from it
may trust their caches until their lease runs out (they count it from its last answer), so a
master that sees a peer die holds changes until then (`on_peer_dead`), as a restarted master
does.

Callbacks across masters: after a batch commits, the master NOTIFYs `kelp_breaks` with what it
changed (paths, trees, inodes: callbacks.Keys); every other master breaks the callbacks its
own sessions hold on them, waits for their acknowledgements as it does for its own changes,
and NOTIFYs `kelp_acks`. The committing master answers the batch only when every live master
acknowledged (or died, or a lease went by), which is what makes a change seen by every other
mount's next call, whichever master that mount talks to. A notice longer than one NOTIFY
payload (8,000 bytes) goes in parts, each acknowledged on its own.

A mount whose master stopped answering resumes its session, same id, on another master,
which tells the others (`session_moved`): a master that only lost sight of that mount
forgets the session instead of ending it when its lease runs out, so the files it keeps
open after unlink stay (they are freed when the session ends where it lives now).
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable

import psycopg

from cluster.master.callbacks import Keys

log = logging.getLogger(__name__)

LEADER_LOCK = 0x4B454C50_00000002   # pg advisory lock key of leadership (our own number)
BREAKS, ACKS = "kelp_breaks", "kelp_acks"
TICK_S = 0.5          # row refresh, leadership attempts, liveness checks
ALIVE_S = 3.0         # a master whose row is older than this is dead
FORGET_S = 600.0      # the leader deletes rows of masters dead this long
MAX_PAYLOAD = 7900    # NOTIFY payloads must stay under 8000 bytes
# How the server notices that the link connection's master is gone when nothing tells it (its
# host was cut off: no FIN, no RST), so that the advisory lock is released: keepalives when
# the connection is idle (idle + interval * count: 3 s), tcp_user_timeout (ms) when
# the server has something unacknowledged in flight to it (a notification), where keepalives
# do not apply and TCP would otherwise retransmit for many minutes.
KEEPALIVE = {"tcp_keepalives_idle": 1, "tcp_keepalives_interval": 1,
             "tcp_keepalives_count": 2, "tcp_user_timeout": 3000}


def encode_notices(origin: int, seq: int, keys: Keys) -> list[str]:
    """What a commit changed as NOTIFY payloads of at most MAX_PAYLOAD bytes each: parts
    0..n-1 of notice `seq`, every part acknowledged on its own. A single key too long for a
    payload of its own (a path of thousands of bytes, escaped) makes its part a break of
    everything: never fewer keys than were changed."""
    items = ([("p", p) for p in sorted(keys.paths)] + [("t", t) for t in sorted(keys.trees)]
             + [("i", i) for i in sorted(keys.inos)])
    parts: list[dict[str, list]] = []
    size = MAX_PAYLOAD
    for kind, key in items:
        cost = len(json.dumps(key, ensure_ascii=False).encode()) + 1
        if not parts or size + cost > MAX_PAYLOAD - 200:   # 200: the envelope
            parts.append({"p": [], "t": [], "i": []})
            size = 0
        parts[-1][kind].append(key)
        size += cost
    parts = parts or [{"p": [], "t": [], "i": []}]
    out = []
    for n, body in enumerate(parts):
        text = json.dumps({"o": origin, "s": seq, "n": n, **body}, ensure_ascii=False,
                          separators=(",", ":"))
        if len(text.encode()) > MAX_PAYLOAD:
            text = json.dumps({"o": origin, "s": seq, "n": n, "p": [], "t": ["/"], "i": []})
        out.append(text)
    return out


def decode_keys(text: str) -> tuple[int, int, int, Keys]:
    """(origin, seq, part, keys) of one notice."""
    body = json.loads(text)
    return body["o"], body["s"], body.get("n", 0), Keys(
        paths=set(body["p"]), trees=set(body["t"]), inos=set(body["i"]))


def encode_moved(origin: int, session: int) -> str:
    return json.dumps({"o": origin, "moved": session})


class PeerLink:
    """This master's place among the masters of one database: its row, its leadership, and
    the break notifications to and from the others. One thread owns the link connection
    (LISTEN, the advisory lock, the row); `publish` and `ack` are called from the mutation
    thread on a connection of their own."""

    def __init__(self, dsn: str, grpc_address: str, mutation_address: str, name: str,
                 on_break: Callable[[], None] = lambda: None,
                 on_peer_dead: Callable[[float], None] = lambda wall_s: None):
        self.master_id = random.getrandbits(62) + 1
        self.grpc_address = grpc_address
        self._dsn = dsn
        self._row = (grpc_address, mutation_address)
        self._name = name
        self._on_break = on_break
        self._on_peer_dead = on_peer_dead
        self.leader = False
        self.breaks: queue.SimpleQueue[tuple[int, int, int, Keys]] = queue.SimpleQueue()
        # Sessions another master resumed (their mount failed over to it): forget them
        # here without ending them, or their kept-open files would be freed under them.
        self.moved: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._acks: dict[int, set[tuple[int, int]]] = {}    # seq -> {(master, part)}
        self._parts: dict[int, int] = {}                    # seq -> parts it was sent in
        self._acks_lock = threading.Lock()
        self._alive: dict[int, float] = {}          # master id -> last seen (wall seconds)
        self._addresses: dict[int, str] = {}        # master id -> its gRPC address
        self._leader_address = ""
        self._seq = 0
        self._stop = threading.Event()
        self._link: psycopg.Connection | None = None
        self._pub = self._connect()
        self._thread = threading.Thread(target=self._run, name="peers", daemon=True)

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self._dsn, autocommit=True,
                               application_name=f"kelp-master-{self._name}-link")

    def start(self) -> PeerLink:
        self._open_link()
        self._tick()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with contextlib.suppress(psycopg.Error):
            self._pub.execute("DELETE FROM masters WHERE master_id=%s", (self.master_id,))
        for conn in (self._link, self._pub):
            if conn is not None:
                conn.close()   # releases the advisory lock: another master leads at once

    # ------------------------------------------------------------ what others ask

    def leader_address(self) -> str:
        """The gRPC address of the leading master ("" while none is known)."""
        return self.grpc_address if self.leader else self._leader_address

    def live_masters(self) -> list[int]:
        now = time.time()
        return [m for m, seen in self._alive.items() if now - seen < ALIVE_S]

    def live_addresses(self) -> list[str]:
        """The gRPC addresses of every live master, this one included, as of the last tick
        (ClusterStatus answers from memory, not with a query each)."""
        return sorted(self._addresses[m] for m in self.live_masters() if m in self._addresses)

    # ------------------------------------------------------------ breaks (mutation thread)

    def publish(self, keys: Keys) -> tuple[int, set[int]]:
        """Tell every other master what a commit changed; (seq, masters that must ack)."""
        self._seq += 1
        others = {m for m in self.live_masters() if m != self.master_id}
        notices = encode_notices(self.master_id, self._seq, keys)
        with self._acks_lock:
            self._acks[self._seq] = set()
            self._parts[self._seq] = len(notices)
        for text in notices:
            self._pub.execute("SELECT pg_notify(%s, %s)", (BREAKS, text))
        return self._seq, others

    def acked(self, seq: int) -> set[int]:
        """The masters that acknowledged every part of notice `seq`."""
        with self._acks_lock:
            got = collections.Counter(who for who, _ in self._acks.get(seq, ()))
            parts = self._parts.get(seq, 1)
        return {m for m, n in got.items() if n >= parts}

    def done(self, seq: int) -> None:
        with self._acks_lock:
            self._acks.pop(seq, None)
            self._parts.pop(seq, None)

    def session_moved(self, session: int) -> None:
        """Tell the other masters this one now holds `session` (a mount failed over)."""
        self._pub.execute("SELECT pg_notify(%s, %s)",
                          (BREAKS, encode_moved(self.master_id, session)))

    def ack(self, origin: int, seq: int, part: int = 0) -> None:
        self._pub.execute("SELECT pg_notify(%s, %s)",
                          (ACKS, f"{origin} {seq} {self.master_id} {part}"))

    # ------------------------------------------------------------ the link thread

    def _open_link(self) -> None:
        conn = self._connect()
        for name, value in KEEPALIVE.items():
            conn.execute(f"SET {name} = {int(value)}")
        conn.execute(f"LISTEN {BREAKS}")
        conn.execute(f"LISTEN {ACKS}")
        self._link = conn

    def _run(self) -> None:
        next_tick = time.monotonic() + TICK_S
        while not self._stop.is_set():
            try:
                if self._link is None or self._link.closed or self._link.broken:
                    self._lost_link()
                    self._open_link()
                wait = max(0.0, next_tick - time.monotonic())
                assert self._link is not None
                for n in self._link.notifies(timeout=wait):
                    self._heard(n.channel, n.payload)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                    self._tick()
            except psycopg.Error as e:
                log.warning("link to the metadata database failed (%s); reconnecting", e)
                self._lost_link()
                self._stop.wait(TICK_S)

    def _lost_link(self) -> None:
        if self.leader:
            log.warning("master %s: lost the database link, so the leadership", self._name)
        self.leader = False
        if self._link is not None:
            with contextlib.suppress(psycopg.Error):
                self._link.close()
        self._link = None

    def _heard(self, channel: str, payload: str) -> None:
        if channel == BREAKS and '"moved"' in payload:
            body = json.loads(payload)
            if body["o"] != self.master_id:
                self.moved.put(body["moved"])
                self._on_break()
        elif channel == BREAKS:
            origin, seq, part, keys = decode_keys(payload)
            if origin != self.master_id:
                self.breaks.put((origin, seq, part, keys))
                self._on_break()
        elif channel == ACKS:
            origin, seq, who, part = (int(x) for x in payload.split())
            if origin == self.master_id:
                with self._acks_lock:
                    if seq in self._acks:
                        self._acks[seq].add((who, part))
                self._on_break()

    def _tick(self) -> None:
        """Refresh our row, try for the leadership, learn who is alive and who leads."""
        conn = self._link
        assert conn is not None
        now = time.time_ns()
        if not self.leader:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()[0]
            if got:
                self.leader = True
                log.info("master %s (%s) is the leader", self._name, self.grpc_address)
        conn.execute(
            "INSERT INTO masters (master_id, grpc_address, mutation_address, leader, seen_ns)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (master_id) DO UPDATE SET"
            " leader = excluded.leader, seen_ns = excluded.seen_ns",
            (self.master_id, *self._row, self.leader, now))
        if self.leader:
            conn.execute("UPDATE masters SET leader = false WHERE master_id != %s AND leader",
                         (self.master_id,))
            conn.execute("DELETE FROM masters WHERE seen_ns < %s", (now - int(FORGET_S * 1e9),))
        rows = conn.execute("SELECT master_id, seen_ns, leader, grpc_address FROM masters"
                            ).fetchall()
        before = set(self.live_masters())
        self._alive = {r[0]: r[1] / 1e9 for r in rows}
        self._addresses = {r[0]: r[3] for r in rows}
        self._leader_address = next((r[3] for r in rows if r[2]), "")
        for gone in before - set(self.live_masters()):
            log.warning("master %x stopped answering (last seen %.1fs ago)", gone,
                        time.time() - self._alive.get(gone, 0))
            self._on_peer_dead(self._alive.get(gone, time.time()))
