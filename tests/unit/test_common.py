"""Units of cluster/common: fids, the errno table, chunk arithmetic, configuration."""
import errno
import itertools
import platform

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.common import chunkmap
from cluster.common.chunkmap import Piece
from cluster.common.config import ConfigError, resolve
from cluster.common.errors import FsError, errno_from_status
from cluster.common.fid import BadFid, Fid
from cluster.master.options import MasterOptions


@pytest.mark.timeout(10)
def test_fid_round_trip_and_rejects_garbage():
    f = Fid(7, 0x1234, 0xDEADBEEF)
    assert str(f) == "7,1234deadbeef"
    assert Fid.parse(str(f)) == f
    for bad in ["", "7", "7,", "x,1234deadbeef", "7,zz34deadbeef", "7,deadbeef",
                "99999999999,1deadbeef", "7," + "f" * 30]:
        with pytest.raises(BadFid):
            Fid.parse(bad)


@pytest.mark.timeout(10)
def test_errno_names_survive_the_status_round_trip():
    for err in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENAMETOOLONG, errno.EISDIR,
                errno.ENOTDIR, errno.ENODATA, errno.ENOSPC, errno.EIO, errno.EINVAL):
        e = FsError(err, "x")
        assert errno_from_status(e.status(), e.status_message()) == err
    assert errno_from_status(grpc.StatusCode.UNAVAILABLE, "connect failed") == errno.EAGAIN
    assert errno_from_status(grpc.StatusCode.DATA_LOSS, "crc") == errno.EIO
    assert errno_from_status(grpc.StatusCode.UNKNOWN, None) == errno.EIO


def _bytes_of(pieces, size, needles):
    out = bytearray(size)
    for p in pieces:
        out[p.file_offset:p.end] = needles[p.fid][p.needle_offset:p.needle_offset + p.length]
    return bytes(out)


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("w"), st.integers(0, 300), st.integers(1, 100)),
    st.tuples(st.just("t"), st.integers(0, 400), st.just(0))), max_size=25))
def test_overlay_and_truncate_match_a_bytearray_model(ops):
    model = bytearray()
    pieces: list[Piece] = []
    needles = {}
    for i, (kind, a, b) in enumerate(ops):
        if kind == "w":
            data = bytes([(i * 7 + j) % 251 + 1 for j in range(b)])
            fid = f"1,{i:x}00000000"
            needles[fid] = data
            pieces = chunkmap.overlay(pieces, [Piece(a, b, fid, 0, b)])
            if len(model) < a + b:
                model.extend(b"\0" * (a + b - len(model)))
            model[a:a + b] = data
        else:
            pieces = chunkmap.truncate(pieces, a)
            del model[a:]
            model.extend(b"\0" * (a - len(model)))
        starts = [p.file_offset for p in pieces]
        assert starts == sorted(starts)
        assert all(p.end <= q.file_offset for p, q in itertools.pairwise(pieces))
        assert _bytes_of(pieces, len(model), needles) == bytes(model)
        lo, n = len(model) // 3, len(model) // 2 + 1
        sub = chunkmap.pieces_for_range(pieces, lo, n)
        got = bytearray(n)
        for p in sub:
            got[p.file_offset - lo:p.end - lo] = needles[p.fid][p.needle_offset:
                                                                 p.needle_offset + p.length]
        assert bytes(got[:max(0, len(model) - lo)]) == bytes(model[lo:lo + n])


@pytest.mark.timeout(10)
def test_config_sources_and_unknown_keys(tmp_path, monkeypatch):
    toml = tmp_path / "kelp.toml"
    toml.write_text('[master]\nname = "from-file"\ndefault_replication = 2\n')
    monkeypatch.setenv("KELP_MASTER_DEFAULT_REPLICATION", "3")
    opts = resolve(MasterOptions, "master", {"port": 1234, "name": None}, str(toml))
    assert (opts.port, opts.name, opts.default_replication) == (1234, "from-file", 3)
    toml.write_text('[master]\nnmae = "typo"\n')
    with pytest.raises(ConfigError, match="nmae"):
        resolve(MasterOptions, "master", {}, str(toml))
    monkeypatch.setenv("KELP_MASTER_PORTT", "1")
    with pytest.raises(ConfigError, match="PORTT"):
        resolve(MasterOptions, "master", {})


@pytest.mark.timeout(10)
def test_kelp_up_options_from_flags_env_and_toml(tmp_path, monkeypatch):
    """`kelp up --allow-other` has its TOML and env spellings; unset, it stays None so the
    mount decides (on for root)."""
    from tools.local_cluster import UpOptions
    assert resolve(UpOptions, "up", {"allow_other": None}).allow_other is None
    toml = tmp_path / "kelp.toml"
    toml.write_text("[up]\nallow_other = true\nvolumes = 2\n")
    opts = resolve(UpOptions, "up", {"allow_other": None}, str(toml))
    assert (opts.allow_other, opts.volumes) == (True, 2)
    monkeypatch.setenv("KELP_UP_ALLOW_OTHER", "no")
    assert resolve(UpOptions, "up", {}, str(toml)).allow_other is False
    assert resolve(UpOptions, "up", {"allow_other": True}, str(toml)).allow_other is True
    monkeypatch.setenv("KELP_UP_ALLOW_OTHER", "maybe")
    with pytest.raises(ConfigError):
        resolve(UpOptions, "up", {})


def test_a_long_error_message_is_cut_to_fit_a_grpc_status():
    from cluster.common.errors import STATUS_MESSAGE_MAX
    message = FsError(errno.ENOENT, "/" + "d/" * 5000).status_message()
    assert len(message) <= STATUS_MESSAGE_MAX + 3
    assert message.startswith("ENOENT: /d/")


@pytest.mark.timeout(10)
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_volume_servers_malloc_thresholds_are_accepted(monkeypatch):
    """glibc refuses an mmap threshold above 32 MiB (64-bit) and then changes nothing.
    ctypes.util.find_library runs `ldconfig -p` in a process; glibc's soname stands in."""
    from cluster.common import malloc
    monkeypatch.setattr(malloc.ctypes.util, "find_library", lambda name: "libc.so.6")
    assert malloc.keep_big_buffers()
