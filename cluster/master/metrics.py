"""The master's Prometheus metrics.

Module-level, registered once per process in the default registry (several MasterNodes in one
test process share them; a real deployment runs one master per process). Per-node values that
are a snapshot (servers alive, pending deletions) are in /status instead.
"""
from __future__ import annotations

from prometheus_client import Counter

ASSIGNED_FIDS = Counter("kelp_master_assigned_fids", "File ids handed out by Assign")
VOLUMES_GROWN = Counter("kelp_master_volumes_grown", "Volumes created by growth rounds")
NEEDLES_REAPED = Counter("kelp_master_needles_reaped",
                         "Needles deleted from every replica by the reaper")
HEARTBEATS = Counter("kelp_master_heartbeats", "Volume-server heartbeats received")
COMMITS = Counter("kelp_master_commits", "Chunk-list commits")
