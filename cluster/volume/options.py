"""VolumeOptions: everything `kelp volume` can be told, with its default and its help.

The flags, KELP_VOLUME_* variables and TOML keys all come from these fields
(cluster/common/config.py); `-ip -p -gp -n --master` keep the original KelpFS command line
(`volume --master`) working.
"""
from __future__ import annotations

from dataclasses import dataclass

from cluster.common.config import NodeOptions, option


@dataclass
class VolumeOptions(NodeOptions):
    ip: str = option("127.0.0.1", "address to bind (other addresses are opt-in)",
                     flags=("-ip",))
    port: int = option(8080, "HTTP port for /status and /metrics (0 = any free port)",
                       flags=("-p",))
    grpc_port: int = option(18080, "gRPC port (0 = any free port)", flags=("-gp",))
    name: str = option("v0", "node name", flags=("-n",))
    master: str = option("127.0.0.1:19333", "the master's gRPC address, or several masters' "
                         "host:port,host:port,... (heartbeats go to every one)",
                         flags=("-mserver",))
    dir: str = option("./data/v0", "directory of the volume files and the server id",
                      flags=("--data",))
    max_volumes: int = option(16, "volumes this server may hold")
    durability: str = option(
        "fsync", "fsync: a write is acknowledged once in the operating system and synced "
        "when a client's fsync asks; group: each write synced (batched within "
        "group_commit_ms) before its acknowledgement; always: fsync each write alone; none: "
        "never (tests, benchmarks)", choices=("fsync", "group", "always", "none"))
    group_commit_ms: float = option(2.0, "milliseconds a group-durability sync waits for "
                                    "more writes")
    min_free_bytes: int = option(64 << 20, "refuse writes (ENOSPC) when the disk has less "
                                 "free")
    volume_size_limit: int = option(1 << 30, "bytes per volume until the master's "
                                    "registration answer says otherwise")
