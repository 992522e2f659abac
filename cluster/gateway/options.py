"""GatewayOptions: everything `kelp gateway` can be told, with its default."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GatewayOptions:
    ip: str = "127.0.0.1"
    port: int = 7000                  # ZMQ ROUTER (0 = any free port)
    http_port: int = 0                # /status and /metrics (0 = any free port)
    name: str = "g0"
    master: str = "127.0.0.1:19333"   # the master's gRPC address
    workers: int = 8                  # chunk writes in flight at once (all clients)
    assign_batch: int = 16            # fids fetched from the master per Assign call
    write_retries: int = 3            # fresh fids tried when a replica write fails
    max_chunk: int = 64 << 20         # largest payload accepted, bytes
