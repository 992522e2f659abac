"""One source for every option: flags, help, env and TOML keys come from the dataclasses."""
from __future__ import annotations

import argparse
import dataclasses
import os

import pytest

from cluster.common.config import ConfigError, add_flags, env_name, resolve
from cluster.gateway.options import GatewayOptions
from cluster.master.options import MasterOptions
from cluster.volume.options import VolumeOptions
from fusefs.options import MountOptions
from tools.local_cluster import UpOptions

NODES = [("master", MasterOptions), ("volume", VolumeOptions), ("gateway", GatewayOptions),
         ("mount", MountOptions), ("up", UpOptions)]

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("node", "cls"), NODES)
def test_every_field_has_help_a_flag_and_an_env_name(node, cls):
    parser = argparse.ArgumentParser(prog=node)
    add_flags(parser, cls, node)
    text = parser.format_help()
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
        if f.metadata.get("positional"):
            continue
        assert "--" + f.name.replace("_", "-") in text
        assert env_name(node, f.name) in text


@pytest.mark.parametrize(("node", "cls"), NODES)
def test_defaults_come_through_when_nothing_is_given(node, cls, monkeypatch):
    for key in list(os.environ):
        if key.startswith("KELP_"):
            monkeypatch.delenv(key)
    parser = argparse.ArgumentParser(prog=node)
    add_flags(parser, cls, node)
    argv = ["/mnt"] if cls is MountOptions else []
    got = resolve(cls, node, parser.parse_args(argv))
    expected = cls(mountpoint="/mnt") if cls is MountOptions else cls()
    assert got == expected


def test_the_original_short_spellings_still_parse():
    parser = argparse.ArgumentParser()
    add_flags(parser, MasterOptions, "master")
    opts = resolve(MasterOptions, "master", parser.parse_args(
        ["-ip", "127.0.0.2", "-p", "1", "-gp", "2", "-n", "mx", "--replication", "2",
         "-mdir", "/tmp/m"]))
    assert (opts.ip, opts.port, opts.grpc_port, opts.name, opts.default_replication,
            opts.data_dir) == ("127.0.0.2", 1, 2, "mx", 2, "/tmp/m")
    parser = argparse.ArgumentParser()
    add_flags(parser, VolumeOptions, "volume")
    opts = resolve(VolumeOptions, "volume", parser.parse_args(["--master", "h:1", "--dir", "d"]))
    assert (opts.master, opts.dir) == ("h:1", "d")


def test_flags_win_over_env_which_wins_over_the_file(tmp_path, monkeypatch):
    toml = tmp_path / "k.toml"
    toml.write_text("[mount]\nchunk_size = \"1M\"\nwrite_credits = 2\nattr_ttl = 3.0\n")
    monkeypatch.setenv("KELP_MOUNT_WRITE_CREDITS", "5")
    monkeypatch.setenv("KELP_MASTER", "m:1")
    parser = argparse.ArgumentParser()
    add_flags(parser, MountOptions, "mount")
    opts = resolve(MountOptions, "mount", parser.parse_args(["/mnt", "--attr-ttl", "7",
                                                             "--no-callbacks"]), str(toml))
    assert (opts.chunk_size, opts.write_credits, opts.attr_ttl, opts.callbacks,
            opts.master) == (1 << 20, 5, 7.0, False, "m:1")
    monkeypatch.setenv("KELP_MOUNT_MASTER", "m:2")   # the node's own name wins over the alias
    assert resolve(MountOptions, "mount", {"mountpoint": "/m"}).master == "m:2"


def test_bad_values_are_a_config_error_or_a_usage_error(monkeypatch):
    monkeypatch.setenv("KELP_VOLUME_DURABILITY", "sometimes")
    with pytest.raises(ConfigError, match="durability"):
        resolve(VolumeOptions, "volume", {})
    parser = argparse.ArgumentParser()
    add_flags(parser, MountOptions, "mount")
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["/mnt", "--chunk-size", "lots"])
    assert exit_info.value.code == 2
