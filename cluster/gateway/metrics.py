"""The gateway's Prometheus metrics, labelled by gateway name.

Module-level so that several gateways in one process (tests, an all-in-one local cluster)
share one registration instead of colliding in the default registry; the `gateway` label
tells them apart.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CHUNKS_WRITTEN = Counter("kelp_gateway_chunks_written", "Chunks stored on all their replicas",
                         ["gateway"])
BYTES_WRITTEN = Counter("kelp_gateway_bytes_written", "Payload bytes of the chunks stored "
                        "(once, not per replica)", ["gateway"])
ERRORS = Counter("kelp_gateway_errors", "Requests answered with an Error, by kind",
                 ["gateway", "kind"])
COMMIT_SECONDS = Histogram("kelp_gateway_commit_seconds", "Master.CommitChunks latency",
                           ["gateway"],
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                    1.0, 2.5, 5.0, 10.0))
WRITE_SECONDS = Histogram("kelp_gateway_chunk_write_seconds", "Time to store one chunk on all "
                          "replicas", ["gateway"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
IN_FLIGHT = Gauge("kelp_gateway_requests_in_flight", "Writes and commits being processed",
                  ["gateway"])
