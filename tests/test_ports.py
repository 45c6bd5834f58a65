"""The ports the farm's stack chooses for its services (mlc_farm/farm/stack.py): free, and out of the kernel's
way until the service binds them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

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


def test_a_port_taken_before_a_late_part_of_weed_binds_it_is_a_restart_on_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port of weed's taken before weed binds it (here its admin's, the last part it starts, after its S3 port
    answers) is a restart on new ports, not a server missing a part. (Whether the S3 port answered before the
    admin part failed varies from run to run: the start waits for weed's own word that all its parts run.)"""
    from mlc_farm.farm import stack

    thief = socket.socket()
    thief.bind(("127.0.0.1", 0))
    thief.listen()
    chosen: list[dict[str, int]] = []

    def first_with_a_taken_port(n: int, pair_offset: int = 0) -> list[int]:
        ports = dict(zip(SEAWEED_PORTS, free_ports(n, pair_offset), strict=True))
        if not chosen:
            ports["admin.port"] = thief.getsockname()[1]  # its last part, bound after S3 answers
        chosen.append(ports)
        return list(ports.values())

    monkeypatch.setattr(stack, "free_ports", first_with_a_taken_port)
    try:
        service = stack.start_seaweed(tmp_path / "weed", "farm-admin", "farm-secret-0123")
    finally:
        thief.close()
    try:
        assert len(chosen) == 2 and service.alive()
        assert service.url == f"http://127.0.0.1:{chosen[1]['s3.port']}"
        # Nothing is left of the weed that ended: none of the sockets its parts made in /tmp.
        assert not [path for port in chosen[0].values() for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
    finally:
        service.stop()


def test_the_sockets_of_a_weed_that_ended_go_and_another_weeds_stay() -> None:
    """weed makes Unix sockets in /tmp named for its ports and leaves them when it ends on a taken port: those
    that no process has open go; one still open (another weed's, on the port this one could not take) stays, and
    so does a file of that name that is not a socket."""
    from mlc_farm.farm import stack

    dead, live, other = free_ports(3)
    paths = {port: Path(f"/tmp/seaweedfs-admin-grpc-{port}.sock") for port in (dead, live, other)}
    ended, listening = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    try:
        ended.bind(str(paths[dead]))
        ended.close()  # its file stays, as a socket nobody has open
        listening.bind(str(paths[live]))
        listening.listen()
        paths[other].write_text("not a socket")
        stack._remove_weeds_dead_sockets([dead, live, other])
        assert not paths[dead].exists() and paths[live].is_socket() and paths[other].read_text() == "not a socket"
    finally:
        listening.close()
        for path in paths.values():
            path.unlink(missing_ok=True)
