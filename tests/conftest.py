"""Shared fixtures: real clusters (tests/harness.py) that always stop, logs on failure."""
from __future__ import annotations

import itertools
import os

import pytest

from tests.harness import Mount, dump_logs, make_cluster
from tools.pglocal import LocalPostgres, NoPostgres


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def cluster_factory(tmp_path, request):
    """Make (and start) clusters; every one is stopped at teardown."""
    made = []

    def make(volumes: int = 3, start: bool = True, **kw):
        cluster = make_cluster(tmp_path / f"c{len(made)}", volumes=volumes, **kw)
        made.append(cluster)
        if start:
            cluster.start(timeout=40)
        return cluster

    yield make
    failed = getattr(request.node, "rep_call", None)
    for cluster in made:
        if failed is not None and failed.failed:
            dump_logs(cluster)
        cluster.stop()


@pytest.fixture
def cluster(cluster_factory):
    """A started cluster: 1 master, 3 volume servers, 1 gateway, on free loopback ports."""
    return cluster_factory(volumes=3)


@pytest.fixture
def mount_factory(tmp_path):
    mounts = []

    def make(cluster, name: str = "mnt", *extra: str) -> Mount:
        m = Mount(cluster, tmp_path / name, *extra)
        mounts.append(m)
        return m.start()

    yield make
    for m in mounts:
        m.stop()


@pytest.fixture
def mounted(cluster, mount_factory):
    """A started cluster mounted at tmp_path/mnt; yields the mount point (a Path)."""
    return mount_factory(cluster).mountpoint


@pytest.fixture(scope="session")
def pg_server():
    """One private PostgreSQL server for the whole run (tools/pglocal.py), fsync off: tests
    of the PostgreSQL store need a real server, not its durability. Skipped, with the
    reason, only where the server binaries are not installed; `make test` installs them and
    sets KELP_REQUIRE_POSTGRES=1, so there a missing server fails instead."""
    try:
        server = LocalPostgres(durable=False).start()
    except NoPostgres as e:
        if os.environ.get("KELP_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{e}, and KELP_REQUIRE_POSTGRES=1")
        pytest.skip(str(e))
    yield server
    server.stop()


_databases = itertools.count()


@pytest.fixture
def pg_dsn(pg_server):
    """The DSN of a new, empty database of its own for this test."""
    return pg_server.create_database(f"t{os.getpid()}_{next(_databases)}")
