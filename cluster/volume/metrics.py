"""Prometheus metrics of the volume server, served on /metrics.

Defined once per process (Prometheus refuses to register a name twice) and labelled by node
name, since tests and `kelp up`-style local modes may run several volume nodes in one process.
"""
from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

BYTES_WRITTEN = Counter("kelp_volume_bytes_written", "Needle data bytes stored", ["node"])
BYTES_READ = Counter("kelp_volume_bytes_read", "Needle data bytes returned to readers", ["node"])
NEEDLES_WRITTEN = Counter("kelp_volume_needles_written", "Needles stored", ["node"])
NEEDLES_READ = Counter("kelp_volume_needles_read", "Needle reads answered", ["node"])
NEEDLES_DELETED = Counter("kelp_volume_needles_deleted", "Needles deleted", ["node"])
ERRORS = Counter("kelp_volume_errors", "Requests answered with an error status",
                 ["node", "method", "code"])
VOLUMES = Gauge("kelp_volume_volumes", "Volumes held by this server", ["node"])
FREE_BYTES = Gauge("kelp_volume_free_bytes", "Free bytes on the data dir's file system", ["node"])


def forget(node: str) -> None:
    """Drop a stopped node's gauges (their callbacks would hold the node alive)."""
    for gauge in (VOLUMES, FREE_BYTES):
        with contextlib.suppress(KeyError):
            gauge.remove(node)
