"""Serving in the clear is allowed on loopback only, unless the operator says --insecure."""
from __future__ import annotations

import pytest

from cluster.common.config import ConfigError
from cluster.common.security import check_bind, is_loopback

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("10.0.0.5", False), ("::", False), ("myhost", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_a_public_address_needs_tls_or_insecure(caplog):
    with pytest.raises(ConfigError, match="--insecure"):
        check_bind("master m0", "0.0.0.0", None, insecure=False)
    check_bind("master m0", "0.0.0.0", "/etc/kelp/tls", insecure=False)
    check_bind("master m0", "127.0.0.1", None, insecure=False)
    check_bind("master m0", "0.0.0.0", None, insecure=True)
    assert "without TLS" in caplog.text
