"""The kernel options mount.py derives from its flags: what the kernel may cache follows the
coherence mode (docs/caching.md)."""
from __future__ import annotations

import pytest

import mount
from fusefs.fuse_binding import CAN_INVALIDATE


def kernel(*flags: str) -> dict:
    args = mount.build_parser().parse_args(["/mnt", *flags])
    return mount.fuse_kwargs(mount.options_from_args(args))


@pytest.mark.timeout(10)
def test_with_callbacks_the_kernel_asks_about_every_name():
    kw = kernel()
    assert kw["entry_timeout"] == 0
    assert kw["negative_timeout"] == 0
    assert kw["attr_timeout"] == (1.0 if CAN_INVALIDATE else 0.0)


@pytest.mark.timeout(10)
def test_entry_ttl_and_no_callbacks_give_the_kernel_time():
    assert kernel("--entry-ttl", "0.5")["entry_timeout"] == 0.5
    kw = kernel("--no-callbacks", "--attr-ttl", "2")
    assert kw["entry_timeout"] == 2
    assert kw["attr_timeout"] == 2


@pytest.mark.timeout(10)
def test_default_permissions_is_on_unless_turned_off():
    assert kernel()["default_permissions"] is True
    kw = kernel("--no-default-permissions", "--no-callbacks", "--entry-ttl", "3")
    assert "default_permissions" not in kw
    # Without the kernel's checks, every name must reach the mount (and the master's check).
    assert kw["entry_timeout"] == 0
