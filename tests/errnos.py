"""pytest.raises for an OSError with a given errno, for the unit and integration tests."""
from __future__ import annotations

import pytest


def raises_errno(*codes: int):
    """pytest.raises(OSError) that also requires the errno to be one of `codes`.

    str() of an OSError that carries an errno (any system call's, and FuseOSError's) starts
    with "[Errno N]", which `match` checks; the caught error is in `.value` as usual."""
    return pytest.raises(OSError, match="|".join(rf"^\[Errno {code}\]" for code in codes))
