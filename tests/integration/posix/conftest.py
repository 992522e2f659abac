"""POSIX conformance through a real mount, in the spirit of pjdfstest (tests of our own).

For chmod, chown, link, mkdir, open, rename, rmdir, symlink, truncate, unlink and utimensat
the test_posix_*.py files here check what POSIX (and, where POSIX leaves a choice, Linux's
local file systems) promise: return values, errno, and the resulting st_mode, st_nlink,
st_size, st_uid/st_gid and ctime/mtime. They run as root; permission checks (EACCES/EPERM,
which the kernel makes under `default_permissions` from the attributes we return) run in a
forked child that drops to nobody (65534), so both mounts are made with --allow-other (root
needs no user_allow_other in /etc/fuse.conf).

One cluster serves two mounts for the whole package (the `env` fixture, package-scoped: it
starts before the first test here and stops, unmounting both, after the last):
  ttl0    --attr-ttl 0: the kernel and the driver cache nothing, so each stat asks the master
  cached  the default attr_ttl (1 s): what users run; the driver promises that a mount sees
          its own changes at once, so timestamp and link-count tests run on both
Each test works in a fresh directory. Deliberate differences are strict xfails ("documented
difference: ...", listed in docs/posix.md); bugs are strict xfails whose reason starts "BUG:".
The helpers the tests share are in posixutil.py.
"""
from __future__ import annotations

import itertools
import os

import pytest

from tests.integration.mountutil import cluster_with_two_mounts
from tests.integration.posix.posixutil import UMASK


@pytest.fixture(scope="package")
def env(tmp_path_factory):
    with cluster_with_two_mounts(tmp_path_factory, "posix", ("--attr-ttl", "0", "--allow-other"),
                                 "cached", ("--allow-other",)) as (m0, m1):
        yield {"ttl0": m0, "cached": m1}


@pytest.fixture
def mnt_name():
    """The mount a test uses; tests marked @both are parametrized over the two."""
    return "ttl0"


_serial = itertools.count()


@pytest.fixture
def d(env, mnt_name):
    """A fresh directory (root:root 0755) on the chosen mount; umask 022 during the test."""
    path = env[mnt_name].mountpoint / f"{mnt_name}-{next(_serial)}"
    path.mkdir()
    os.chmod(path, 0o755)
    old = os.umask(UMASK)
    try:
        yield path
    finally:
        os.umask(old)


@pytest.fixture
def other(env, mnt_name):
    """The other mount of the same cluster (same names, separate kernel and driver caches)."""
    return env["cached" if mnt_name == "ttl0" else "ttl0"].mountpoint
