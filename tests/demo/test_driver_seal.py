"""The organisation driver against a real OpenBao that a threat seals: it unseals, or fails loudly.

A sealed server audits nothing, so before this every request after a successful ``sys/seal`` was
silently lost and every later threat was labelled with no request (one generated organisation in
ten lost its last four days that way).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultwatch.demo.org_driver import Driver, DriverError
from vaultwatch.demo.servers import OpenBaoServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OpenBaoServer]:
    with OpenBaoServer(tmp_path / "bao") as srv:
        yield srv


def _driver(srv: OpenBaoServer) -> Driver:
    return Driver(srv.addr, srv.root_token, now=1.8e9, rng=random.Random(1))


def test_dev_server_prints_an_unseal_key_the_driver_can_use(server: OpenBaoServer) -> None:
    d = _driver(server)
    d.unseal_key = server.unseal_key()
    assert d.unseal_key
    assert d.req(None, "PUT", "sys/seal").ok
    d.unseal()
    assert d.req(None, "GET", "sys/mounts").ok
    d.close()


def test_a_request_to_a_sealed_server_fails_loudly(server: OpenBaoServer) -> None:
    d = _driver(server)
    assert d.req(None, "PUT", "sys/seal").ok
    with pytest.raises(DriverError, match="sealed"):
        d.req(None, "GET", "sys/mounts")
    with pytest.raises(DriverError, match="unseal key is unknown"):
        d.unseal()
    d.close()
