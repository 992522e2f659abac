"""VolumeOptions: everything `kelp volume` can be told, with its default."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VolumeOptions:
    ip: str = "127.0.0.1"
    port: int = 8080                  # HTTP: /status and /metrics (0 = any free port)
    grpc_port: int = 18080            # gRPC service (0 = any free port)
    name: str = "v0"
    master: str = "127.0.0.1:19333"   # the master's gRPC address
    dir: str = "./data/v0"            # volume files and the server id live here
    max_volumes: int = 16             # volumes this server may hold
    durability: str = "fsync"         # fsync: a write is acknowledged once in the OS, synced
                                      # when a client's fsync asks (Sync); group: each write
                                      # synced (batched within group_commit_ms) before its
                                      # acknowledgement; always: fsync each write alone;
                                      # none: never (tests, benchmarks)
    group_commit_ms: float = 2.0
    min_free_bytes: int = 64 << 20    # refuse writes (ENOSPC) when the disk has less free
    volume_size_limit: int = 1 << 30  # bytes; until the master's RegisterResponse says otherwise
