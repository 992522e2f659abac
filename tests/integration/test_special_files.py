"""Every file type through a real mount, checked against the local disk.

Special files (FIFOs, unix sockets, character and block devices) are metadata at the master;
the kernel gives them their behaviour. For each file type (regular, directory, FIFO, socket,
char, block, symlink) and each operation of the conformance suite (chmod, chown, link, rename,
rename onto every other type, unlink, rmdir, utimensat, truncate, xattrs), the same case runs
on the mount and on a directory of the local disk (ext4 here), as root and as nobody (65534),
and the two must agree: the errno and what the directory holds afterwards (type, mode, nlink,
size, rdev, owner, and the times utimensat set). The local disk is the reference, so an errno
that differs from what Linux's own file systems give fails, whichever it is.

The mount is made as root without --allow-other: it is on by default for root, which the
cases run as nobody rely on.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.errnos import raises_errno
from tests.harness import kelp
from tests.integration.mountutil import (
    assert_clean_log,
    needs_fuse,
    sh,
    start_cluster_and_mount,
    stop_all,
)

pytestmark = [pytest.mark.mount, needs_fuse,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, setuid)")]

NOBODY = 65534
KINDS = ["regular", "directory", "fifo", "socket", "char", "block", "symlink"]
DEVICES = {"char": (stat.S_IFCHR, os.makedev(1, 3)), "block": (stat.S_IFBLK, os.makedev(7, 9))}
TIMES = (1_000_000_000_123_456_789, 1_100_000_000_987_654_321)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cluster, mount = start_cluster_and_mount(tmp_path_factory, "special")
    local = tmp_path_factory.mktemp("special-local")
    os.chmod(local, 0o755)
    try:
        yield {"mount": mount.mountpoint, "local": local, "cluster": cluster}
    finally:
        stop_all(cluster, mount)
    assert_clean_log(mount)


def make(kind: str, name: str) -> None:
    """Make `name` (relative to the cwd) of the given type, as the current user."""
    if kind == "regular":
        with open(name, "wb") as fh:
            fh.write(b"twelve bytes")
    elif kind == "directory":
        os.mkdir(name)
    elif kind == "fifo":
        os.mkfifo(name, 0o644)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as s:  # relative: sun_path holds only 108 bytes
            s.bind(name)
    elif kind == "symlink":
        os.symlink("tgt", name)
    else:
        mode, dev = DEVICES[kind]
        os.mknod(name, mode | 0o644, dev)


def snapshot(d: Path, with_times: bool) -> dict:
    """What a case left in its directory: per name, the attributes that must agree."""
    out = {}
    for name in sorted(os.listdir(d)):
        st = os.lstat(d / name)
        row = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
               st.st_rdev]
        if not stat.S_ISDIR(st.st_mode):  # a directory's nlink and size are the FS's own
            row += [st.st_nlink, st.st_size]
        if with_times and name == "obj":
            row += [st.st_atime_ns, st.st_mtime_ns]
        out[name] = tuple(row)
    return out


def utimensat_nofollow(path: str) -> None:
    os.utime(path, ns=TIMES, follow_symlinks=False)


OPS = {
    "chmod": lambda: os.chmod("obj", 0o640),
    "chown": lambda: os.chown("obj", NOBODY, NOBODY, follow_symlinks=False),
    "chown-root": lambda: os.chown("obj", 0, 0, follow_symlinks=False),
    "link": lambda: os.link("obj", "new", follow_symlinks=False),
    "rename": lambda: os.rename("obj", "new"),
    "unlink": lambda: os.unlink("obj"),
    "rmdir": lambda: os.rmdir("obj"),
    "utimensat": lambda: utimensat_nofollow("obj"),
    "truncate": lambda: os.truncate("obj", 3),
    "setxattr-user": lambda: os.setxattr("obj", "user.k", b"v", follow_symlinks=False),
    "setxattr-trusted": lambda: os.setxattr("obj", "trusted.k", b"v", follow_symlinks=False),
}


def run_case(d: Path, kind: str, op: str, user: str, onto: str | None) -> str:
    """In a forked child: make d (0755, owned by the user) with a regular file `tgt`, the
    object `obj` of `kind` (and `dst` of kind `onto`), then run the op as the user. Devices
    are made by root and given to the user (only root may make them). Returns the errno
    name, 'OK', or 'SETUP <errno>' if making the objects failed."""
    uid = 0 if user == "root" else NOBODY
    pid = os.fork()
    if pid == 0:
        code, stage = 255, "setup"
        try:
            d.mkdir()
            os.chown(d, uid, uid)
            os.chdir(d)
            for name, k in (("obj", kind), ("dst", onto)):
                if k in DEVICES:
                    make(k, name)
                    os.chown(name, uid, uid)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            make("regular", "tgt")
            for name, k in (("obj", kind), ("dst", onto)):
                if k is not None and k not in DEVICES:
                    make(k, name)
            stage = "op"
            if onto is not None:
                os.rename("obj", "dst")
            else:
                OPS[op]()
            code = 0
        except OSError as e:
            code = 201 if stage == "setup" else (e.errno if 0 < e.errno < 200 else 254)
        except BaseException:
            code = 255
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return "OK"
    if code == 201:
        return "setup failed"
    return errno.errorcode.get(code, f"exit {code}")


def differences(env, name: str, cases: list[tuple]) -> list[str]:
    """Run each (kind, op, user, onto) case on the mount and on the local disk; the
    differences, one line each."""
    results: dict[tuple, dict] = {}
    for case in cases:
        for where in ("local", "mount"):
            d = env[where] / f"{name}-{'-'.join(map(str, case))}"
            results[case, where] = {"result": run_case(d, *case), "dir": d}
    if any(op == "link" for _, op, _, _ in cases):
        # The documented libfuse 2 difference (docs/posix.md): each hard-linked name is its
        # own kernel inode, so the other name shows the new nlink after attr_ttl (1 s).
        time.sleep(1.2)
    bad = []
    for case in cases:
        kind, op, user, onto = case
        got = {where: (results[case, where]["result"],
                       snapshot(results[case, where]["dir"], with_times=op == "utimensat"))
               for where in ("local", "mount")}
        if got["local"] != got["mount"] or got["local"][0] == "setup failed":
            bad.append(f"{kind} {op}{' onto ' + onto if onto else ''} as {user}: "
                       f"local {got['local']} != mount {got['mount']}")
    return bad


@pytest.mark.parametrize("user", ["root", "nobody"])
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.timeout(120)
def test_every_type_under_each_operation_matches_the_local_disk(env, op, user):
    cases = [(kind, op, user, None) for kind in KINDS]
    assert differences(env, "op", cases) == []


@pytest.mark.parametrize("user", ["root", "nobody"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.timeout(120)
def test_rename_of_each_type_onto_each_type_matches_the_local_disk(env, kind, user):
    cases = [(kind, "rename", user, onto) for onto in KINDS]
    assert differences(env, "onto", cases) == []


@pytest.mark.timeout(60)
def test_special_files_behave_and_describe_themselves(env):
    """A FIFO carries bytes between two processes, a socket accepts a connection, devices
    keep their numbers, and `ls -l` shows each type; nothing of it is data at the master."""
    d = env["mount"] / "behave"
    d.mkdir()
    os.mkfifo(d / "fifo", 0o600)
    pid = os.fork()
    if pid == 0:
        with open(d / "fifo", "wb") as fh:
            fh.write(b"through the fifo")
        os._exit(0)
    with open(d / "fifo", "rb") as fh:
        assert fh.read() == b"through the fifo"
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0

    cwd = os.getcwd()
    os.chdir(d)
    try:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind("sock")
            server.listen(1)
            with socket.socket(socket.AF_UNIX) as client:
                client.connect("sock")
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"ping")
                    assert conn.recv(4) == b"ping"
    finally:
        os.chdir(cwd)
    for kind in DEVICES:
        mode, dev = DEVICES[kind]
        os.mknod(d / kind, mode | 0o600, dev)
        st = os.stat(d / kind)
        assert stat.S_IFMT(st.st_mode) == mode
        assert st.st_rdev == dev
    listing = sh(f"ls -l {d}").stdout
    assert [line[0] for line in sorted(listing.splitlines()[1:], key=lambda s: s.split()[-1])] \
        == ["b", "c", "p", "s"], listing
    assert " 1, 3 " in listing, listing
    assert " 7, 9 " in listing, listing
    # The mount is nodev (libfuse's default): a stored device cannot be opened through it.
    with pytest.raises(PermissionError), open(d / "char", "rb"):
        pass


@pytest.mark.timeout(120)
def test_tar_of_a_tree_with_every_type_round_trips(env, tmp_path):
    """`tar cpf` of a local tree with every type, `tar xpf` into the mount, then back out:
    the same types, modes, owners and device numbers (what restoring a home directory or a
    root file system needs)."""
    src = tmp_path / "src"
    src.mkdir()
    cwd = os.getcwd()
    os.chdir(src)
    try:
        for kind in KINDS:
            make(kind, kind)
        os.chown("fifo", NOBODY, NOBODY)
    finally:
        os.chdir(cwd)
    dest = env["mount"] / "tar"
    dest.mkdir()
    sh(f"tar -C {src} -cpf {tmp_path}/t.tar . && tar -C {dest} -xpf {tmp_path}/t.tar")
    back = tmp_path / "back"
    back.mkdir()
    sh(f"tar -C {dest} -cpf {tmp_path}/u.tar . && tar -C {back} -xpf {tmp_path}/u.tar")
    # GNU tar leaves sockets out of an archive ("socket ignored"); everything else round-trips
    want = {k: v for k, v in snapshot(src, False).items() if k != "socket"}
    assert snapshot(dest, False) == want
    assert snapshot(back, False) == want


@pytest.mark.timeout(120)
def test_kelp_ls_download_and_fsck_handle_special_files(env, tmp_path):
    master = env["cluster"].master_addr
    d = env["mount"] / "cli"
    d.mkdir()
    cwd = os.getcwd()
    os.chdir(d)
    try:
        for kind in KINDS:
            make(kind, kind)
    finally:
        os.chdir(cwd)
    ls = kelp("ls", "-l", "/cli", "--master", master, check=True).stdout.decode()
    for shown in ("crw-r--r--", "1, 3", "brw-r--r--", "7, 9", "prw-r--r--", "srwx"):
        assert shown in ls, (shown, ls)

    one = kelp("download", "/cli/fifo", "-o", str(tmp_path / "x"), "--master", master)
    assert one.returncode == 1
    assert "FIFO" in one.stderr.decode()
    assert len(one.stderr.decode().strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()

    res = kelp("download", "-r", "/cli", "-o", str(tmp_path), "--master", master, check=True)
    err = res.stderr.decode()
    assert "skipped /cli/socket" in err, err
    got = snapshot(tmp_path / "cli", False)
    want = {k: v for k, v in snapshot(d, False).items() if k != "socket"}
    assert got == want
    assert (tmp_path / "cli" / "regular").read_bytes() == b"twelve bytes"
    assert os.readlink(tmp_path / "cli" / "symlink") == "tgt"

    fsck = kelp("fsck", "--master", master, timeout=120)
    assert fsck.returncode == 0, fsck.stdout.decode() + fsck.stderr.decode()


@pytest.mark.timeout(120)
def test_a_tree_deeper_than_path_max_works_by_cd_steps(env):
    """PATH_MAX limits one call's argument, not a tree's depth: 40 levels of 200-byte names
    (8 KB from the mount's root), built and used by relative paths, then `rm -rf`."""
    top = env["mount"] / "deep"
    top.mkdir()
    name = "d" * 200
    cwd = os.getcwd()
    try:
        os.chdir(top)
        for _ in range(40):
            os.mkdir(name)
            os.chdir(name)
        assert len(os.getcwd().encode()) > 8000
        Path("f").write_bytes(b"0123456789")
        os.rename("f", "g")
        os.link("g", "h")
        os.symlink("g", "s")
        os.chmod("g", 0o600)
        os.truncate("h", 4)
        os.mkfifo("p")
        os.mkdir("sub")
        os.rename("g", "sub/g")
        st = os.lstat("sub/g")
        assert (stat.S_IMODE(st.st_mode), st.st_nlink, st.st_size) == (0o600, 2, 4)
        assert Path("h").read_bytes() == b"0123"
        assert os.readlink("s") == "g"
        assert sorted(os.listdir(".")) == ["h", "p", "s", "sub"]
        os.unlink("h")
        assert sorted(os.listdir(".")) == ["p", "s", "sub"]
        # an absolute path this long is the kernel's to refuse, not ours
        with raises_errno(errno.ENAMETOOLONG):
            os.stat(os.path.join(os.getcwd(), "sub", "g"))
    finally:
        os.chdir(cwd)
    rm = subprocess.run(["rm", "-rf", "deep"], cwd=env["mount"], capture_output=True,
                        timeout=60)
    assert rm.returncode == 0, rm.stderr
    assert not (env["mount"] / "deep").exists()
