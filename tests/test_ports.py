"""The ports the farm's stack chooses for its services (mlc_farm/farm/stack.py): free, and out of the kernel's
way until the service binds them."""

from __future__ import annotations

import socket
from pathlib import Path

from mlc_farm.farm.stack import ADMIN_GRPC_OFFSET, SEAWEED_PORTS, free_ports


def _ephemeral_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_ports_are_free_distinct_and_below_the_range_connections_take_theirs_from() -> None:
    """A port the kernel handed out (bind to 0) could become the local end of any outgoing connection before the
    service binds it; below the ephemeral range none can."""
    ports = free_ports(40)
    assert len(set(ports)) == 40 and all(10000 <= p < _ephemeral_start() for p in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # still free


def test_weeds_admin_pair_is_chosen_together() -> None:
    """weed's plugin worker dials admin.port + 10000 whatever admin.port.grpc says (it logged `invalid port`
    every few seconds for an admin port above 55535)."""
    ports = dict(zip(SEAWEED_PORTS, free_ports(len(SEAWEED_PORTS), ADMIN_GRPC_OFFSET), strict=True))
    assert ports["admin.port.grpc"] == ports["admin.port"] + ADMIN_GRPC_OFFSET < _ephemeral_start()
    assert len(set(ports.values())) == len(SEAWEED_PORTS)


def test_a_port_in_use_is_never_chosen() -> None:
    taken = []
    try:
        for port in free_ports(30):
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            sock.listen()
            taken.append(sock)
        held = {s.getsockname()[1] for s in taken}
        for _ in range(20):
            assert not held & set(free_ports(30))
    finally:
        for sock in taken:
            sock.close()
