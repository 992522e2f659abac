"""Real tools on a real mount: git and tar work inside KelpFS as on a local disk."""
from __future__ import annotations

import os

import pytest

from tests.integration.mountutil import (
    assert_clean_log,
    needs_fuse,
    sh,
    start_cluster_and_mount,
    stop_all,
)

pytestmark = [pytest.mark.mount, needs_fuse]


@pytest.fixture(scope="module")
def mnt(tmp_path_factory):
    cluster, mount = start_cluster_and_mount(tmp_path_factory, "tools")
    yield mount.mountpoint
    stop_all(cluster, mount)
    assert_clean_log(mount)


@pytest.mark.timeout(120)
def test_git_inside_the_mount(mnt):
    repo = mnt / "repo"
    repo.mkdir()
    env = "GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@e"
    sh("git init -q .", cwd=repo)
    (repo / "a.txt").write_text("alpha\n")
    (repo / "sub").mkdir()
    (repo / "sub/b.txt").write_text("beta\n")
    sh("git add -A", cwd=repo)
    sh(f"{env} git commit -q -m first", cwd=repo)
    (repo / "a.txt").write_text("alpha2\n")
    sh(f"{env} git commit -q -am second", cwd=repo)
    log = sh("git log --oneline", cwd=repo).stdout.splitlines()
    assert len(log) == 2
    assert sh("git status --porcelain", cwd=repo).stdout == ""
    assert sh("git fsck --no-progress", cwd=repo, check=False).returncode == 0


@pytest.mark.timeout(120)
def test_tar_extract_and_recreate(mnt, tmp_path):
    src = tmp_path / "src"
    (src / "d/e").mkdir(parents=True)
    for i in range(20):
        (src / f"d/f{i}.txt").write_text(f"file {i}\n" * (i * 50))
    (src / "d/e/bin").write_bytes(os.urandom(200_000))
    os.symlink("f1.txt", src / "d/link")
    os.link(src / "d/f2.txt", src / "d/hard")
    os.chmod(src / "d/f3.txt", 0o600)
    sh(f"tar -C {src} -cf {tmp_path}/in.tar d")
    (mnt / "x").mkdir()
    sh(f"tar -C {mnt}/x -xpf {tmp_path}/in.tar")
    sh(f"diff -r {src}/d {mnt}/x/d")
    sh(f"tar -C {mnt}/x -cf {tmp_path}/out.tar d")
    listing = "tar --numeric-owner -tvf {} | sort"
    assert sh(listing.format(f"{tmp_path}/in.tar")).stdout == \
        sh(listing.format(f"{tmp_path}/out.tar")).stdout
