"""A local multi-node Ray cluster: a head and N worker nodes as separate ``ray start`` processes.

Each node is its own ``ray start --block`` process in its own session, so this module knows
exactly which processes it started: ``down`` stops those sessions by PID (never by name) and
checks that no process of theirs is left. Token authentication is on (``RAY_AUTH_MODE=token``)
with a token generated once and kept, mode 0600, in the raymlops folder (``~/.raymlops``, or
``$RAYMLOPS_HOME``); the dashboard and Jobs API listen on 127.0.0.1 only.

The cluster's Ray temp folder is its own (not ``/tmp/ray``), so its address is not written to
``/tmp/ray/ray_current_cluster``: a plain ``ray.init()`` elsewhere on this machine still starts
its own local Ray instead of joining this cluster by surprise.

No Ray import here: the nodes are child processes and their state is read over HTTP.

Example:
    >>> state = up(workers=2)  # doctest: +SKIP
    >>> state.dashboard_url  # doctest: +SKIP
    'http://127.0.0.1:41234'
    >>> down()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from raymlops.errors import RaymlopsError
from raymlops.raystart import LOOPBACK_ENV
from raymlops.runtime import LOCAL_HOST, LOCAL_RAY_ENV, refuse_haproxy

__all__ = [
    "ClusterError",
    "ClusterState",
    "NodeProcess",
    "NodeSpec",
    "down",
    "check_private",
    "ensure_token",
    "node_command",
    "raymlops_home",
    "read_token",
    "status",
    "up",
]

TOKEN_FILE = "auth_token"  # noqa: S105 - a file name, not a secret
STATE_FILE = "cluster.json"
_START_TIMEOUT_S = 120.0
_STOP_GRACE_S = 20.0


class ClusterError(RaymlopsError):
    """A cluster request that cannot be done: one already runs, none runs, a node failed."""

    exit_code = 2


# -- the raymlops folder and the token -----------------------------------------------------------


def raymlops_home() -> Path:
    """The user's raymlops folder: ``$RAYMLOPS_HOME``, else ``~/.raymlops``."""
    return Path(os.environ.get("RAYMLOPS_HOME") or Path.home() / ".raymlops").expanduser()


def check_private(path: Path) -> None:
    """Refuse a token file that other users can read."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ClusterError(
            f"the token file {path} can be read by other users (mode {mode:o}); "
            f"run `chmod 600 {path}` (or delete it to make a new token at the next cluster up)"
        )


def ensure_token(home: Path | None = None) -> Path:
    """The cluster token's file, made (256 random bits, mode 0600) when it does not exist yet.

    Example:
        >>> path = ensure_token(Path(tempfile.mkdtemp()))
        >>> oct(path.stat().st_mode & 0o777)
        '0o600'

    Raises:
        ClusterError: an existing token file is readable by others, or empty.
    """
    home = home or raymlops_home()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / TOKEN_FILE
    try:
        # O_EXCL: two `cluster up` at once cannot both write a token; 0600 from the first byte
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        check_private(path)
        if not path.read_text().strip():
            raise ClusterError(
                f"the token file {path} is empty; delete it and run cluster up"
            ) from None
        return path
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # whatever the umask
        out.write(secrets.token_hex(32))
    return path


def read_token(home: Path | None = None) -> tuple[str | None, str]:
    """The token a client should send, and where it came from (for messages).

    Looked up in Ray's order, then raymlops's own file: ``RAY_AUTH_TOKEN``, the file at
    ``RAY_AUTH_TOKEN_PATH``, ``~/.raymlops/auth_token`` (made by ``raymlops cluster up``),
    Ray's default ``~/.ray/auth_token``. Returns ``(None, searched)`` when none is found.

    Raises:
        ClusterError: a token file exists but is readable by others.
    """
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    candidates = []
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        candidates.append(Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser())
    candidates += [(home or raymlops_home()) / TOKEN_FILE, Path.home() / ".ray" / "auth_token"]
    for path in candidates:
        if path.is_file():
            check_private(path)
            token = path.read_text().strip()
            if token:
                return token, str(path)
    return None, "RAY_AUTH_TOKEN, " + ", ".join(str(p) for p in candidates)


# -- node commands (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    """One node's ``ray start`` settings; ports are chosen free on this machine."""

    name: str  # head, worker-1, ...
    head: bool
    num_cpus: float
    num_gpus: int
    object_store_bytes: int
    ports: dict[str, int]


def node_command(
    ray: str | Sequence[str], spec: NodeSpec, *, temp_dir: str, gcs_address: str
) -> list[str]:
    """The ``ray start`` command line of one node; ``ray`` is the command that runs ``ray``
    (``up`` uses ``python -m raymlops.raystart``, which keeps the loopback node IP address).

    Every port is given explicitly: several nodes on one machine otherwise reach for the same
    defaults (a raylet was seen to abort with "bind: Address already in use"). Every node's
    IP address is 127.0.0.1, so its servers (GCS, raylet, workers, agents, metrics exporters)
    listen on loopback only.

    Example:
        >>> spec = NodeSpec("head", True, 0, 0, 2**28, {"port": 6380, "dashboard-port": 8266})
        >>> node_command("ray", spec, temp_dir="/tmp/r", gcs_address="127.0.0.1:6380")[:4]
        ['ray', 'start', '--block', '--head']
    """
    cmd = [ray] if isinstance(ray, str) else list(ray)
    cmd += ["start", "--block"]
    if spec.head:
        cmd += ["--head", "--dashboard-host", LOCAL_HOST, "--include-dashboard", "true"]
    else:
        cmd += ["--address", gcs_address]
    cmd += [
        f"--num-cpus={spec.num_cpus:g}",
        f"--num-gpus={spec.num_gpus}",
        f"--object-store-memory={spec.object_store_bytes}",
        f"--temp-dir={temp_dir}",
        f"--node-ip-address={LOCAL_HOST}",
        # workers take any free port, as Ray's own multi-node-on-one-machine test cluster does
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--disable-usage-stats",
    ]
    cmd += [f"--{flag}={port}" for flag, port in sorted(spec.ports.items())]
    return cmd


_NODE_PORTS = (
    "node-manager-port",
    "object-manager-port",
    "metrics-export-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
)
_HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port")


def _free_ports(count: int) -> list[int]:
    # hold every socket until all are picked, so the ports differ from one another
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def plan_nodes(
    workers: int,
    *,
    cpus_per_worker: float = 1,
    gpus_per_worker: int = 0,
    head_cpus: float = 0,
    object_store_mb: int = 256,
    ports: Callable[[int], list[int]] = _free_ports,
) -> list[NodeSpec]:
    """The head and ``workers`` worker nodes, each with its own free ports.

    The head gets no CPUs by default, so Tune trials and Ray Data tasks run on the workers
    (as on a real cluster, where the head only schedules).
    """
    names = [*_HEAD_PORTS, *_NODE_PORTS] + [p for _ in range(workers) for p in _NODE_PORTS]
    pool = iter(ports(len(names)))
    memory = object_store_mb * 1024 * 1024
    head = NodeSpec(
        "head", True, head_cpus, 0, memory, {n: next(pool) for n in (*_HEAD_PORTS, *_NODE_PORTS)}
    )
    nodes = [head]
    for i in range(1, workers + 1):
        nodes.append(
            NodeSpec(
                f"worker-{i}",
                False,
                cpus_per_worker,
                gpus_per_worker,
                memory,
                {n: next(pool) for n in _NODE_PORTS},
            )
        )
    return nodes


# -- state ---------------------------------------------------------------------------------------


@dataclass
class NodeProcess:
    """A ``ray start --block`` process we started: its PID, session and start time."""

    name: str
    pid: int
    started: float  # the process's start time, so a recycled PID is never taken for ours
    log: str


@dataclass
class ClusterState:
    """What ``up`` started, as saved in ``~/.raymlops/cluster.json``."""

    gcs_address: str
    dashboard_url: str
    temp_dir: str
    token_path: str
    created: float
    nodes: list[NodeProcess] = field(default_factory=list)

    def save(self, home: Path) -> None:
        path = home / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, home: Path) -> ClusterState | None:
        path = home / STATE_FILE
        if not path.exists():
            return None
        payload = json.loads(path.read_text())
        nodes = [NodeProcess(**n) for n in payload.pop("nodes")]
        return cls(**payload, nodes=nodes)


def _start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since boot, Linux), or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    if fields[0] == "Z":  # exited, waiting to be reaped: not running
        return None
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _alive(node: NodeProcess) -> bool:
    if not Path("/proc").is_dir():  # not Linux: PID only
        try:
            os.kill(node.pid, 0)
        except ProcessLookupError:
            return False
        return True
    started = _start_time(node.pid)
    return started is not None and abs(started - node.started) < 1.0


def session_processes(sessions: set[int]) -> list[int]:
    """Every live process in the given sessions (what one ``ray start --block`` started)."""
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return [pid for pid in sessions if _pid_alive(pid)]
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getsid(pid) in sessions and _start_time(pid) is not None:
                found.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return sorted(found)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- HTTP helpers (the dashboard) ----------------------------------------------------------------


def _get_json(url: str, token: str, timeout: float = 5.0) -> object:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http URL: {url}")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


def alive_nodes(dashboard_url: str, token: str) -> list[dict[str, object]]:
    """The cluster's alive nodes as the dashboard's state API lists them."""
    payload = _get_json(f"{dashboard_url}/api/v0/nodes?limit=1000", token)
    result = payload.get("data", {}).get("result", {}) if isinstance(payload, dict) else {}
    rows = result.get("result", []) if isinstance(result, dict) else []
    return [row for row in rows if row.get("state") == "ALIVE"]


# -- up / down / status --------------------------------------------------------------------------


def _ray_executable() -> str:
    sibling = Path(sys.executable).parent / "ray"
    found = str(sibling) if sibling.exists() else shutil.which("ray")
    if not found:
        raise ClusterError(
            "the `ray` command is not installed beside this Python: pip install 'ray[default]'"
        )
    return found


def _temp_dir(home: Path) -> str:
    # short (Ray's Unix socket paths must stay under 107 bytes) and unique per raymlops folder
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]
    return os.path.join(tempfile.gettempdir(), f"raymlops-{os.getuid()}-{digest}")


def _node_env(token_path: Path, ray: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):  # a node must not join another cluster
        env.pop(key, None)
    env.update(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path), RAY_USAGE_STATS_ENABLED="0"
    )
    for key, value in LOCAL_RAY_ENV.items():  # Serve as a one-process raymlops Ray runs it
        env.setdefault(key, value)
    env.update(LOOPBACK_ENV)  # every process of every node keeps 127.0.0.1 (raymlops.raystart)
    # job entry points say `python`: on this cluster that is the Python that runs Ray (and has
    # raymlops), even when the caller did not activate its virtualenv
    env["PATH"] = os.pathsep.join([str(Path(ray).parent), env.get("PATH", "")])
    return env


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def up(
    workers: int = 2,
    *,
    cpus_per_worker: float = 1,
    gpus_per_worker: int = 0,
    head_cpus: float = 0,
    object_store_mb: int = 256,
    home: Path | None = None,
    timeout_s: float = _START_TIMEOUT_S,
    on_node: Callable[[str], None] | None = None,
) -> ClusterState:
    """Start a head and ``workers`` worker nodes; returns what was started (also saved).

    Nodes start one after another, each waited for until the cluster lists it alive.

    Raises:
        ClusterError: a cluster from this raymlops folder is running, or a node did not come
            up (everything started so far is stopped again; the message has its log's tail).
    """
    home = home or raymlops_home()
    if workers < 1:
        raise ClusterError(f"--workers must be at least 1 (got {workers})")
    running = ClusterState.load(home)
    if running is not None and any(_alive(n) for n in running.nodes):
        raise ClusterError(
            f"a local cluster is already running (dashboard {running.dashboard_url}, "
            f"started by {home / STATE_FILE}); stop it with `raymlops cluster down` first"
        )
    refuse_haproxy()
    token_path = ensure_token(home)
    token = token_path.read_text().strip()
    nodes = plan_nodes(
        workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        head_cpus=head_cpus,
        object_store_mb=object_store_mb,
    )
    head = nodes[0]
    temp_dir = _temp_dir(home)
    gcs_address = f"127.0.0.1:{head.ports['port']}"
    state = ClusterState(
        gcs_address=gcs_address,
        dashboard_url=f"http://127.0.0.1:{head.ports['dashboard-port']}",
        temp_dir=temp_dir,
        token_path=str(token_path),
        created=time.time(),
    )
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ray = _ray_executable()
    env = _node_env(token_path, ray)
    # Ray's `ray start`, keeping --node-ip-address=127.0.0.1 (see raymlops.raystart)
    launcher = [sys.executable, "-m", "raymlops.raystart"]
    try:
        for count, spec in enumerate(nodes, start=1):
            log = logs / f"{spec.name}.log"
            # a temp folder per node, as on separate machines: nodes sharing one would share
            # runtime_resources/, and a worker's runtime-env agent deleting a job's working dir
            # copy there (when its trials end) pulled the job driver's cwd from under it
            node_temp = os.path.join(temp_dir, "h" if spec.head else spec.name.split("-")[-1])
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    node_command(launcher, spec, temp_dir=node_temp, gcs_address=gcs_address),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,  # its own session: `down` finds all it started
                )
            state.nodes.append(
                NodeProcess(spec.name, proc.pid, _start_time(proc.pid) or 0.0, str(log))
            )
            state.save(home)  # saved at once, so `down` can clean up even a half-made cluster
            _wait_for_nodes(state, proc, count, token, timeout_s)
            if on_node:
                on_node(spec.name)
    except BaseException:
        _stop(state, home)
        raise
    return state


def _wait_for_nodes(
    state: ClusterState, proc: subprocess.Popen[bytes], count: int, token: str, timeout_s: float
) -> None:
    node = state.nodes[-1]
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(
                f"{node.name} exited (code {proc.returncode}) while starting; its log "
                f"{node.log} ends with:\n{_log_tail(node.log)}"
            )
        try:
            if len(alive_nodes(state.dashboard_url, token)) >= count:
                return
        except (OSError, ValueError) as exc:  # the dashboard is not up yet
            last_error = str(exc)
        time.sleep(0.5)
    raise ClusterError(
        f"{node.name} did not join within {timeout_s:.0f}s ({last_error or 'not listed'}); "
        f"its log {node.log} ends with:\n{_log_tail(node.log)}"
    )


@dataclass(frozen=True)
class StopReport:
    """What ``down`` stopped, and anything that would not stop (should be empty)."""

    stopped: list[int]
    left: list[int]


def _stop(state: ClusterState, home: Path) -> StopReport:
    ours = [n for n in state.nodes if _alive(n)]
    sessions = {n.pid for n in state.nodes}  # each node leads its own session
    # workers first, then the head (a worker that loses the head mid-stop logs errors)
    for node in reversed(ours):
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    members = [p for p in session_processes(sessions) if _started_after(p, state)]
    stopped = sorted(set(members) | {n.pid for n in ours})
    while time.monotonic() < deadline:
        members = [p for p in session_processes(sessions) if _started_after(p, state)]
        if not members:
            break
        time.sleep(0.3)
    for pid in members:  # did not stop on SIGTERM (e.g. a node still dialling a dead GCS)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(30):
        left = [p for p in session_processes(sessions) if _started_after(p, state)]
        if not left:
            break
        time.sleep(0.2)
    (home / STATE_FILE).unlink(missing_ok=True)
    return StopReport(stopped, left)


def _started_after(pid: int, state: ClusterState) -> bool:
    """True for a process started after the cluster's head (not a recycled PID of another)."""
    started = _start_time(pid)
    first = min((n.started for n in state.nodes), default=0.0)
    return started is not None and started >= first - 1.0


def _recorded(home: Path, what: str) -> ClusterState:
    state = ClusterState.load(home)
    if state is None:
        raise ClusterError(
            f"{what}: no local cluster is recorded in {home / STATE_FILE} "
            "(start one with `raymlops cluster up --workers 2`)"
        )
    return state


def down(home: Path | None = None) -> StopReport:
    """Stop every process the recorded cluster started (by PID), and forget it.

    Raises:
        ClusterError: no cluster is recorded in this raymlops folder.
    """
    home = home or raymlops_home()
    return _stop(_recorded(home, "nothing to stop"), home)


@dataclass(frozen=True)
class ClusterStatus:
    """A running cluster's processes and what the dashboard says about its nodes."""

    state: ClusterState
    processes: dict[str, bool]
    nodes: list[dict[str, object]]
    error: str | None = None


def status(home: Path | None = None) -> ClusterStatus:
    """The recorded cluster's processes and alive nodes.

    Raises:
        ClusterError: no cluster is recorded in this raymlops folder.
    """
    state = _recorded(home or raymlops_home(), "no local cluster is running")
    processes = {n.name: _alive(n) for n in state.nodes}
    nodes: list[dict[str, object]] = []
    error = None
    try:
        nodes = alive_nodes(state.dashboard_url, Path(state.token_path).read_text().strip())
    except (OSError, ValueError) as exc:
        error = f"the dashboard at {state.dashboard_url} does not answer: {exc}"
    return ClusterStatus(state, processes, nodes, error)
