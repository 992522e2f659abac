"""Path arithmetic the mount's modules share (the kernel hands us absolute paths), and the
translation of a `--subdir` mount's paths to the cluster's."""
from __future__ import annotations

import posixpath


def parent_of(path: str) -> str:
    """The directory holding `path` ("/" for the root and its children)."""
    return posixpath.dirname(path.rstrip("/")) or "/"


PATH_FIELDS = ("path", "old_path", "new_path", "existing_path")   # request fields naming paths


class Subdir:
    """The subtree a mount serves as its root (`--subdir`), and the one translation between
    the kernel's paths (what the mount's caches and handles are keyed by) and the cluster's
    (what the master sees and checks against the session's export, docs/security.md).
    MasterClient applies `request` to everything it sends; the session thread applies
    `to_mount` and `tree_to_mount` to the paths of a callback break."""

    def __init__(self, root: str = "/"):
        if any(part in (".", "..") for part in (root or "").split("/")):
            raise ValueError(f"subdir {root!r} may not hold '.' or '..'")
        self.root = "/" + "/".join(p for p in (root or "").split("/") if p)

    @property
    def whole(self) -> bool:
        return self.root == "/"

    def to_cluster(self, path: str) -> str:
        if self.whole or not path:
            return path
        return self.root if path.strip("/") == "" else self.root + "/" + path.lstrip("/")

    def to_mount(self, path: str) -> str | None:
        """The mount's name for a cluster path; None when it is outside the subtree."""
        if self.whole:
            return path
        if path == self.root:
            return "/"
        if path.startswith(self.root + "/"):
            return path[len(self.root):]
        return None

    def tree_to_mount(self, tree: str) -> str | None:
        """A tree key (everything below a directory) as the mount sees it: a directory at
        or above the root is the whole mount."""
        if self.whole:
            return tree
        if tree == "/" or self.root.startswith(tree.rstrip("/") + "/"):
            return "/"
        return self.to_mount(tree)

    def request(self, request):
        """`request` with its paths in cluster terms: a copy, so a retry, or a caller that
        keeps the message, never sees the root prefixed twice."""
        if self.whole:
            return request
        fields = request.DESCRIPTOR.fields_by_name
        names = [f for f in PATH_FIELDS if f in fields and getattr(request, f)]
        if not names:
            return request
        out = type(request)()
        out.CopyFrom(request)
        for f in names:
            setattr(out, f, self.to_cluster(getattr(out, f)))
        return out
