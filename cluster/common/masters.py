"""Several masters serving one namespace: the list a client is given, and moving between them.

With the namespace in PostgreSQL (`kelp master --meta postgresql://...`) several masters
serve one cluster. Every client of the masters (a mount, the CLI, a gateway, a volume server)
is given them as one comma-separated list, `host:port,host:port`; a single address is a list
of one and behaves exactly as before.

`parse_masters` is the one parser of that list. `MasterPool` holds the list, the master in use
and one long-lived gRPC channel per master; `MasterPool.call` runs one call with the failover
rules every client shares:

* an unreachable master (UNAVAILABLE sent by the channel, not by a master; or, with more than
  one master, a deadline passed) makes the pool move to the next master round robin, after
  the usual back-off (cluster/common/retry.py);
* "not the leader" (UNAVAILABLE whose details begin so: a follower asked for a leader-only
  call such as Assign) moves on at once, without back-off, until every master was asked in a
  row; then one back-off before the next round;
* an answer from a master (an errno name in the details, e.g. EAGAIN while it waits for
  volume servers) is retried on the same master, as before;
* `patience` bounds the whole call across all masters; with patience 0 each master is still
  asked once (the quick "is any master there?" check).

Moving is compare-and-move (`move_from`): threads that saw the same master fail move the pool
once, and whoever moved it calls the `on_move` callbacks, so a client can forget what it
learned from the old master.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

from cluster.common.retry import Backoff
from cluster.common.rpc import ChannelCache

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_LEADER = "not the leader"


def parse_masters(text: str | Sequence[str]) -> list[str]:
    """'host:port,host:port' (or a sequence of addresses) -> the addresses, in order, each
    once. ValueError with a one-line message for an empty list, an empty entry or an entry
    that is not host:port (port 1..65535; an IPv6 host in brackets)."""
    raw = text.split(",") if isinstance(text, str) else list(text)
    if not raw or all(not str(a).strip() for a in raw):
        raise ValueError("no master address given (want host:port[,host:port...])")
    found: list[str] = []
    for entry in raw:
        address = str(entry).strip()
        if not address:
            raise ValueError(f"empty entry in the master list {text!r} "
                             "(want host:port[,host:port...])")
        host, sep, port = address.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            bare = host[1:-1]
        else:
            bare = host
            if ":" in host:
                raise ValueError(f"master {address!r}: an IPv6 address goes in brackets "
                                 "([::1]:19333)")
        if not sep or not bare or any(c.isspace() for c in address):
            raise ValueError(f"master {address!r} is not host:port")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"master {address!r}: port {port!r} is not a number in 1..65535")
        if address not in found:
            found.append(address)
    return found


def masters_option(text: str) -> str:
    """An option's value checked and normalised ('a:1, b:2' -> 'a:1,b:2'), for the `parse`
    of a --master option (cluster/common/config.py reports the ValueError in one line)."""
    return ",".join(parse_masters(text))


def _code(e: grpc.RpcError) -> grpc.StatusCode | None:
    return getattr(e, "code", lambda: None)()


def _details(e: grpc.RpcError) -> str:
    return getattr(e, "details", lambda: "")() or ""


def not_leader(e: grpc.RpcError) -> bool:
    """A follower's refusal of a leader-only call: UNAVAILABLE "not the leader ..."."""
    return _code(e) == grpc.StatusCode.UNAVAILABLE and _details(e).startswith(NOT_LEADER)


def is_answer(e: grpc.RpcError) -> bool:
    """UNAVAILABLE sent by a master itself (its message carries an errno name, e.g. EAGAIN
    while it waits for volume servers) rather than by the channel (no connection)."""
    details = _details(e)
    return details[:1] == "E" and details.split(":", 1)[0].isupper()


def unreachable(e: grpc.RpcError, deadline_counts: bool = False) -> bool:
    """The master did not answer: UNAVAILABLE from the channel, or (deadline_counts) a
    deadline that passed."""
    code = _code(e)
    if code == grpc.StatusCode.UNAVAILABLE:
        return not is_answer(e) and not not_leader(e)
    return deadline_counts and code == grpc.StatusCode.DEADLINE_EXCEEDED


class MasterPool:
    """The masters a client knows, the one it uses now, and a channel to each."""

    def __init__(self, addresses: str | Sequence[str],
                 channel_factory: Callable[[str], grpc.Channel] | None = None,
                 stub_class: type | None = None):
        self.addresses = parse_masters(addresses)
        self._factory = channel_factory
        self._stub_class = stub_class
        self._lock = threading.Lock()
        self._index = 0
        self._channels = ChannelCache(channel_factory)   # one channel per master, made once
        self.moves = 0
        # (old, new) -> None, called by the thread that moved the pool, outside any lock.
        self.on_move: list[Callable[[str, str], None]] = []

    def __len__(self) -> int:
        return len(self.addresses)

    @property
    def current(self) -> str:
        return self.addresses[self._index]

    @property
    def several(self) -> bool:
        return len(self.addresses) > 1

    def stub(self, address: str | None = None):
        """The stub (of stub_class) for `address` (default: the current master), made once."""
        return self._channels.stub(address or self.current, self._stub_class or object)

    def set_stubs(self, stubs: dict[str, object]) -> None:
        """Stand-in stubs by address (tests): no channel is made for those masters."""
        for address, stub in stubs.items():
            self._channels.preset(address, self._stub_class or object, stub)

    def move_from(self, address: str, why: str = "") -> bool:
        """Move to the master after `address` if `address` is still the current one; True if
        this call moved the pool (and ran the on_move callbacks)."""
        with self._lock:
            if len(self.addresses) < 2 or self.addresses[self._index] != address:
                return False
            self._index = (self._index + 1) % len(self.addresses)
            new = self.addresses[self._index]
            self.moves += 1
        log.warning("master %s %s; moving to master %s", address, why or "failed", new)
        for callback in list(self.on_move):
            try:
                callback(address, new)
            except Exception:
                log.exception("master failover callback failed")
        return True

    def call(self, attempt: Callable[[str], T], patience: float,
             deadline_counts: bool | None = None,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> T:
        """attempt(address) on the current master until it succeeds, moving between masters
        by the rules in the module's docstring; the last RpcError is raised as it is, for the
        caller to map. deadline_counts (default: with several masters) makes a passed
        deadline count as unreachable."""
        if deadline_counts is None:
            deadline_counts = self.several
        deadline = clock() + patience
        backoff = Backoff()
        quick = 0     # masters tried in a row without a pause
        while True:
            address = self.current
            try:
                return attempt(address)
            except grpc.RpcError as e:
                left = deadline - clock()
                if not_leader(e) or unreachable(e, deadline_counts):
                    refused = not_leader(e)
                    self.move_from(address, "is not the leader" if refused else
                                   f"unreachable ({_code_name(e)})")
                    quick += 1
                    if left <= 0:
                        if quick < len(self.addresses):
                            continue   # no time to wait, but every master gets one try
                        raise
                    if refused and quick < len(self.addresses):
                        continue       # another master may be the leader: ask it at once
                    quick = 0
                    sleep(min(backoff.next(), left))
                    continue
                if _code(e) == grpc.StatusCode.UNAVAILABLE and left > 0:
                    quick = 0
                    sleep(min(backoff.next(), left))   # a master's own EAGAIN: ask it again
                    continue
                raise

    def close(self) -> None:
        self._channels.close()


def _code_name(e: grpc.RpcError) -> str:
    code = _code(e)
    return code.name if code is not None else type(e).__name__
