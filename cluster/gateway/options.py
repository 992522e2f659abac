"""GatewayOptions: everything `kelp gateway` can be told, with its default and its help.

The flags, KELP_GATEWAY_* variables and TOML keys all come from these fields
(cluster/common/config.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from cluster.common.config import NodeOptions, option


@dataclass
class GatewayOptions(NodeOptions):
    ip: str = option("127.0.0.1", "address to bind (other addresses are opt-in)",
                     flags=("-ip",))
    port: int = option(7000, "ZMQ port clients stream chunks to (0 = any free port)",
                       flags=("-p",))
    http_port: int = option(0, "HTTP port for /status and /metrics (0 = any free port)")
    name: str = option("g0", "node name", flags=("-n",))
    master: str = option("127.0.0.1:19333", "the master's gRPC address, or several masters' "
                         "host:port,host:port,... (heartbeats go to every one; calls to one, "
                         "moving to the next when it fails)")
    workers: int = option(8, "chunk writes in flight at once (all clients)")
    assign_batch: int = option(16, "fids fetched from the master per Assign call")
    write_retries: int = option(3, "fresh fids tried when a replica write fails")
    max_chunk: int = option(64 << 20, "largest payload accepted, bytes")
