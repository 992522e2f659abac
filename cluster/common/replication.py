"""The replication range: how many copies of a chunk a file, a volume or a write may ask for.

One bound and one check, so that every door a replication count comes through (a Create, an
Assign, a gateway Write, a volume allocation, the master's own default) agrees on what is legal
and says so in the same words. Two kinds of value arrive:

* a request, where 0 means "the default" (the master's default_replication): CreateRequest,
  AssignRequest and gateway Write carry one;
* a real copy count, 1..MAX_REPLICATION: a volume's replication, the default itself, what
  placement spreads over servers.

Both are EINVAL when out of range: a client sent a value the protocol does not allow.
"""
from __future__ import annotations

import errno

from cluster.common.errors import FsError

# A volume's replicas live on distinct servers; more than 8 copies is a typo, not a policy.
MAX_REPLICATION = 8


def check_replication(replication: int, *, zero_is_default: bool = False) -> int:
    """`replication` if it is a copy count 1..MAX_REPLICATION, or with `zero_is_default` also
    0 ("the default", for the caller to resolve); else FsError(EINVAL)."""
    low = 0 if zero_is_default else 1
    if not low <= replication <= MAX_REPLICATION:
        allowed = f"1..{MAX_REPLICATION}"
        if zero_is_default:
            allowed = f"0 (the default) or {allowed}"
        raise FsError(errno.EINVAL, f"replication {replication} is out of range: "
                                    f"it must be {allowed}")
    return replication
