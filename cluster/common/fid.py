"""File ids: "<volume id>,<key hex><cookie 8 hex>", as SeaweedFS spells them.

The key is the master's 64-bit sequence number; the cookie is 32 random bits chosen by the
writer and checked by the volume server on every read and delete, so knowing one fid does not
let anyone read its neighbours.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

# Volume and volume-server ids are 32-bit on the wire; only the lower half is ever used, so a
# sequence that continues past the largest id anyone sent can never overflow the field.
MAX_VOLUME_ID = 2**31 - 1
MAX_SERVER_ID = 2**31 - 1


class BadFid(ValueError):
    """A string that is not a well-formed fid."""


@dataclass(frozen=True)
class Fid:
    volume_id: int
    key: int
    cookie: int

    def __str__(self) -> str:
        return f"{self.volume_id},{self.key:x}{self.cookie:08x}"

    @classmethod
    def parse(cls, text: str) -> Fid:
        vid, sep, rest = text.partition(",")
        if not sep or not vid.isdigit() or not (9 <= len(rest) <= 24):
            raise BadFid(f"bad fid {text!r}: want '<volume id>,<key hex><cookie 8 hex>'")
        try:
            key = int(rest[:-8], 16)
            cookie = int(rest[-8:], 16)
        except ValueError:
            raise BadFid(f"bad fid {text!r}: key and cookie must be hex") from None
        volume_id = int(vid)
        if volume_id >= 2**32 or key >= 2**64:
            raise BadFid(f"bad fid {text!r}: volume id or key out of range")
        return cls(volume_id, key, cookie)

    @staticmethod
    def new_cookie() -> int:
        return secrets.randbits(32)
