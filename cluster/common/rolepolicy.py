"""Which role may call which gRPC method: the table tls.RoleCheck enforces on every server.

Why a table per method, not per server: a volume server serves the gateway's writes, the
mounts' reads, the master's allocation and the CLI's fsck on one port, and a stolen mount key
must not be able to delete needles there. The default table below is read from who calls
what in this tree (the stub call sites), one role per process kind:

    master   cluster/master       allocation, reaper, vacuum (calls volume servers)
    volume   cluster/volume       register + heartbeat; repair pulls from a peer replica
    gateway  cluster/gateway      Assign, WriteNeedle, Sync, CommitChunks, its heartbeat
    client   the mount (fusefs)   lookups, reads, namespace changes
    admin    the `kelp` CLI       everything a mount does, plus fsck and vacuum

Rules are keyed by full method ("/kelp.volume.Volume/WriteNeedle") or by service
("kelp.volume.Volume", every method of it); a method found in neither gets `default`, which
is nobody: a method added to a .proto is refused until someone decides who may call it
(tests/unit/test_tls.py checks that every method of the protos has its own row).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from cluster.common.credentials import ROLES

MASTER = "kelp.master.Master"
VOLUME = "kelp.volume.Volume"
HEALTH = "grpc.health.v1.Health"

ALL = frozenset(ROLES)
READERS = frozenset({"client", "admin"})     # a mount and the CLI: the file system's users


def _rows(service: str, roles: Iterable[str], *methods: str) -> dict[str, frozenset[str]]:
    return {f"/{service}/{m}": frozenset(roles) for m in methods}


DEFAULT_RULES: dict[str, frozenset[str]] = {
    # -- master: namespace lookups (the mount's, the CLI's ls/cat/fsck path check) --
    **_rows(MASTER, READERS, "GetAttr", "GetAttrByIno", "ReadDir", "Readlink", "GetXattr",
            "ListXattr", "StatFs", "GetChunksAt"),
    # the gateway too: fsync of a file asks which volumes hold its chunks
    **_rows(MASTER, READERS | {"gateway"}, "GetChunks", "LookupVolume"),
    # -- master: namespace changes (the CLI over gRPC; the mount mostly over ZMQ) --
    **_rows(MASTER, READERS, "Mkdir", "Create", "Mknod", "Unlink", "Rmdir", "Rename",
            "Symlink", "Link", "SetAttr", "SetXattr", "RemoveXattr", "WriteInline",
            "ReleaseInode"),
    # only the gateway, after the needles are on every replica, points a file at them
    **_rows(MASTER, {"gateway"}, "CommitChunks", "Assign", "SendGatewayHeartbeat"),
    # -- master: cluster membership --
    **_rows(MASTER, {"volume"}, "RegisterVolumeServer", "SendHeartbeat"),
    **_rows(MASTER, ALL, "ClusterStatus"),     # addresses and sizes; every process asks it
    # -- master: fsck and vacuum (the CLI) --
    **_rows(MASTER, {"admin"}, "ListChunks", "QueueOrphans", "Vacuum"),
    # -- volume: data --
    **_rows(VOLUME, {"gateway"}, "WriteNeedle", "Sync"),
    # a peer volume server reads when it repairs a replica (CopyNeedles, CopyVolume pull)
    **_rows(VOLUME, READERS | {"volume"}, "ReadNeedle"),
    # -- volume: administration (the master's allocation, reaper and vacuum; the CLI's fsck) --
    **_rows(VOLUME, {"master", "admin"}, "AllocateVolume", "DeleteNeedle", "Status",
            "CheckNeedles", "CopyNeedles", "CopyVolume", "Compact"),
    **_rows(VOLUME, {"master", "admin", "volume"}, "ListNeedles"),
    # -- health checks: any authenticated process --
    HEALTH: ALL,
}


@dataclass(frozen=True)
class RolePolicy:
    """Method or service -> roles allowed; unlisted methods get `default` (nobody)."""

    rules: Mapping[str, frozenset[str]] = field(default_factory=lambda: dict(DEFAULT_RULES))
    default: frozenset[str] = frozenset()

    def allowed(self, method: str) -> frozenset[str]:
        """The roles that may call `method` ("/package.Service/Method")."""
        found = self.rules.get(method)
        if found is not None:
            return found
        service = method.lstrip("/").split("/", 1)[0]
        return self.rules.get(service, self.default)

    def permits(self, method: str, role: str | None) -> bool:
        return role is not None and role in self.allowed(method)

    def allow(self, method: str, *roles: str) -> RolePolicy:
        """A copy with `roles` added to `method`'s row (for a deployment's own needs)."""
        unknown = set(roles) - ALL
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}")
        return replace(self, rules={**self.rules,
                                    method: self.allowed(method) | frozenset(roles)})

    def table(self) -> list[tuple[str, tuple[str, ...]]]:
        """(method or service, sorted roles) rows, for documentation and a CLI listing."""
        return [(m, tuple(sorted(r))) for m, r in sorted(self.rules.items())]


DEFAULT_POLICY = RolePolicy()
