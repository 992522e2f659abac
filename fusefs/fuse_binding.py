"""The one module that imports the FUSE binding (fusepy's `fuse`).

Everything else in fusefs/ imports FUSE, Operations, FuseOSError and fuse_get_context from
here, so the binding can be swapped (mfusepy speaks the same API on libfuse 3) in one place.

`KelpFUSE` differs from fusepy's FUSE in three ways: fusepy's high-level `create` hides the
open flags when raw_fi is off, so O_EXCL and O_TRUNC could not reach the operations (KelpFUSE
passes `fi.flags` as a third argument: `Operations.create(path, mode, flags)`); `open` sets
direct_io on the handles the operations ask for (`Operations.direct_io(fh) -> bool`, optional;
see fusefs/kernelsize.py for why); and fusepy's `ioctl` decodes a path libfuse may pass as NULL
(an open file whose name was removed, with flag_nullpath_ok), which crashed inside fusepy.
"""
from __future__ import annotations

from fuse import FUSE, FuseOSError, Operations, fuse_exit, fuse_get_context  # noqa: F401

__all__ = ["FUSE", "KelpFUSE", "Operations", "FuseOSError", "fuse_get_context", "fuse_exit"]


class KelpFUSE(FUSE):
    """fusepy's FUSE, with the open flags handed to `create` (see the module docstring)."""

    def create(self, path, mode, fip):  # noqa: D401 - fusepy callback
        fi = fip.contents
        fi.fh = self.operations("create", path.decode(self.encoding), mode, fi.flags)
        return 0

    def open(self, path, fip):  # noqa: D401 - fusepy callback
        fi = fip.contents
        fi.fh = self.operations("open", path.decode(self.encoding), fi.flags)
        wants_direct_io = getattr(self.operations, "direct_io", None)
        if wants_direct_io is not None and wants_direct_io(fi.fh):
            fi.direct_io = 1
        return 0

    def ioctl(self, path, cmd, arg, fip, flags, data):  # noqa: D401 - fusepy callback
        return self.operations("ioctl", self._decode_optional_path(path), cmd, arg,
                               fip.contents.fh, flags, data)
