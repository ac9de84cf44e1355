"""Performance of trio_sock against a C epoll server, bare Trio, asyncio and uvloop.

Run from the project root with the dev venv's Python::

    python benchmarks/perf.py              # everything, 5 repeats: about 12 minutes
    python benchmarks/perf.py --quick      # one short repeat: about 2-3 minutes
    python benchmarks/perf.py --only pingpong --servers c trio_sock bare_trio
    python benchmarks/perf.py --trio-sock-args "--max-clients 20000 --log-level info --workers 2"

It writes ``benchmarks/RESULTS.md`` (the tables, and the targets met or not) and
``benchmarks/RESULTS.json`` (every raw sample), into ``--output-dir`` if given, and
shows its progress on stderr.  It exits 1 if any reply was wrong or any run failed.

What is measured, on TCP (127.0.0.1) and on a Unix socket each:

- ``connect``: connections per second.  64 connections in flight, each one connect,
  one byte, its successor back, shutdown, the server's EOF, close.
- ``pingpong``: requests per second and latency at 1 and at 64 persistent
  connections, each sending 64 bytes and waiting for the whole reply.
- ``stream``: reply MB/s (10^6 bytes) of one connection that writes 256 KiB buffers
  as fast as the server takes them while reading the replies.
- ``idle``: server memory per idle connection, (VmRSS_N - VmRSS_0) / N at 1,000,
  5,000 and 15,000 clients; then every connection must still answer one byte.

The load comes from ``loadgen.c``, and the physical limit from ``c_server.c``; both
are compiled here with ``gcc -O2`` into ``benchmarks/bin/`` (git ignores it).  Every
reply byte is checked by the load generator; a wrong one is a failure, reported on
stderr, in both results files and in the exit status.  Each server is a subprocess
whose ready line is awaited (never a sleep), pinned to CPU 0 while the load
generator and this script run on CPU 1 (with ``taskset``, when there are 2 CPUs).
The machine is shared and noisy, so everything is interleaved (for each repeat, for
each workload, for each server) and reported as medians and as ratios to the C
server and to bare Trio measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import selectors
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import client_startup
from _machine import fd_limit, machine_info, raise_fd_limit
from _perf_report import (
    SERVERS,
    WORKLOADS,
    Goal,
    Sample,
    Transport,
    Workload,
    render_markdown,
    summarise,
    targets,
)
from _server_process import ROOT, BenchmarkError, ServerProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

HERE: Final = Path(__file__).resolve().parent
#: Build output, ignored by git and left out of the sdist (MANIFEST.in).
BUILD_DIR: Final = HERE / "bin"
SOURCES: Final = {"loadgen": HERE / "loadgen.c", "c_server": HERE / "c_server.c"}
CFLAGS: Final = ("-O2", "-Wall", "-Wextra", "-std=gnu11")
RESULTS_MD: Final = "RESULTS.md"
#: Written by hand, included in RESULTS.md under the targets: for a target not met,
#: what was tried, the profile, and why it goes no further.
ANALYSIS: Final = HERE / "perf_analysis.md"
RESULTS_JSON: Final = "RESULTS.json"

TRANSPORTS: Final[tuple[Transport, ...]] = ("unix", "tcp")
#: trio_sock's arguments besides its addresses: enough client slots for 15,000 idle
#: clients, and its default logging (one record per client that leaves).
DEFAULT_TRIO_SOCK_ARGS: Final = "--max-clients 20000 --log-level info"
#: Runs of each one-shot client (about 0.1 s each) for client_startup.py's comparison.
CLIENT_RUNS: Final = 60
#: Enough that the server's accept path, not one round trip, sets the pace.
CONNECT_CONCURRENCY: Final = 64
PINGPONG_CONCURRENCY: Final = (1, 64)
#: A small request: the per-message cost of the server, not memcpy, is measured.
PINGPONG_SIZE: Final = 64
STREAM_CONNECTIONS: Final = 1
#: Bigger than a 64 KiB server read, so the server always finds a full chunk waiting.
STREAM_WRITE: Final = 256 * 1024
IDLE_COUNTS: Final = (1000, 5000, 15000)
#: The load generator drains for up to 10 s after its window; this only bounds a hang.
LOADGEN_SLACK: Final = 30.0
#: Descriptors each process needs besides the idle connections (stdio, listeners,
#: epoll, pipes); the C server and trio_sock need a few more than Python's baselines.
FD_HEADROOM: Final = 100
#: Connections the idle clients may open ahead of the server's accepts: far below the
#: listen queue (net.core.somaxconn, 4096 here), so that no SYN is ever dropped.
IDLE_AHEAD: Final = 1000
#: Connecting and accepting 15,000 clients takes a few seconds; this is "stuck".
IDLE_TIMEOUT: Final = 120.0
#: One byte there and back on every idle connection: a second or two at most.
ECHO_TIMEOUT: Final = 60.0
POLL_INTERVAL: Final = 0.01


@dataclass(frozen=True)
class Settings:
    """What one run measures and how; recorded in both results files."""

    repeats: int
    duration: float
    warmup: float
    workloads: tuple[Workload, ...]
    servers: tuple[str, ...]
    transports: tuple[Transport, ...]
    idle_counts: tuple[int, ...]
    trio_sock_args: tuple[str, ...]
    server_cpus: str | None
    """taskset's CPU list for the servers, or None when not pinned."""
    loadgen_cpu: int | None
    nice: int
    """The servers' and load generator's niceness: 0, or negative to outrank other work."""
    loadgen_sleeps: bool = False
    """The load generator waits in epoll_wait instead of polling (to share CPUs)."""
    baseline: str | None = None
    """A source tree of another trio_sock (say the previous commit), served as
    ``trio_sock_base`` with the same arguments: a change measured against what it changed."""


# --- Building the C programs -------------------------------------------------------------


def build(name: str) -> Path:
    """Compile ``name``.c into BUILD_DIR unless the binary is newer; return its path."""
    source, binary = SOURCES[name], BUILD_DIR / name
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    BUILD_DIR.mkdir(exist_ok=True)
    # Built under a temporary name and renamed: a concurrent run never sees half a file.
    partial = BUILD_DIR / f".{name}.{os.getpid()}"
    result = subprocess.run(
        ["gcc", *CFLAGS, "-o", str(partial), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BenchmarkError(f"gcc failed on {source.name}:\n{result.stderr}")
    partial.replace(binary)
    return binary


# --- Servers -----------------------------------------------------------------------------

#: trio_sock serving a handler from ``servers/echo_handlers.py``, by server name.
HANDLERS: Final = {
    "trio_sock_echo": "echo_handlers:Echo",
    "trio_sock_echo_async": "echo_handlers:echo",
}
#: The same handlers, served from the ``--baseline`` tree.
BASE_HANDLERS: Final = {
    name.replace("trio_sock_", "trio_sock_base_"): spec for name, spec in HANDLERS.items()
}
#: Servers that send every byte back unchanged: the load generator checks for that.
ECHO_SERVERS: Final = frozenset(
    {*HANDLERS, *BASE_HANDLERS, "bare_trio_echo", "asyncio_echo", "uvloop_echo"}
)
READY: Final = re.compile(r"waiting on unix:(?P<unix>\S+) tcp:(?P<host>[^\s:]+):(?P<port>\d+)")


def server_command(name: str, unix_path: str, settings: Settings) -> list[str]:
    """The command line that starts server ``name`` on ``unix_path`` and a free TCP port."""
    tcp = "127.0.0.1:0"
    if name in ("c", "c_nospin"):
        command = [str(BUILD_DIR / "c_server"), "--unix", unix_path, "--tcp", tcp]
        return command + (["--spin-us", "0"] if name == "c_nospin" else [])
    if name in ("trio_sock", "trio_sock_2w"):
        base = [sys.executable, "-m", "trio_sock", "server", "--unix", unix_path, "--tcp", tcp]
        workers = ["--workers", "2", "--reuse-port"] if name == "trio_sock_2w" else []
        return base + list(settings.trio_sock_args) + workers
    trees = []
    if name.startswith("trio_sock_base"):
        if settings.baseline is None:
            raise BenchmarkError(f"{name} needs --baseline DIR")
        trees.append(settings.baseline)
    if name == "trio_sock_base":
        # That tree's package first on the path, run as ``python -m trio_sock``.
        base = [*_trio_sock_from(*trees), "server", "--unix", unix_path, "--tcp", tcp]
        return base + list(settings.trio_sock_args)
    if name in HANDLERS or name in BASE_HANDLERS:
        # The handler's module lives in servers/: on the path, as the current
        # directory would be, after the baseline tree if the server is from it.
        handler = HANDLERS.get(name) or BASE_HANDLERS[name]
        run = _trio_sock_from(*trees, str(HERE / "servers"))
        base = [*run, "server", "--unix", unix_path, "--tcp", tcp]
        return base + list(settings.trio_sock_args) + ["--handler", handler]
    echo = ["--echo"] if name in ECHO_SERVERS else []
    if name.startswith("bare_trio"):
        script = HERE / "servers" / "bare_trio_server.py"
        return [sys.executable, str(script), "--unix", unix_path, "--tcp", tcp, *echo]
    script = HERE / "servers" / "asyncio_server.py"
    loop = name.removesuffix("_echo")
    return [sys.executable, str(script), "--unix", unix_path, "--tcp", tcp, "--loop", loop, *echo]


def _trio_sock_from(*paths: str) -> list[str]:
    """``python -m trio_sock`` with ``paths`` first on the import path."""
    run = (
        f"import runpy, sys; sys.path[:0] = {list(paths)!r};"
        " runpy.run_module('trio_sock', run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", run]


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants: a server with worker processes is all of them."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree = [root]
    for pid in tree:  # grows while iterated: breadth first
        tree.extend(children.get(pid, ()))
    return tree


class Server(ServerProcess):
    """A server whose ready line named its addresses; memory, fds and CPU of its whole tree."""

    unix_path: str
    tcp_address: str

    def check_ready_line(self, line: str) -> None:
        match = READY.search(line)
        if match is None:
            raise BenchmarkError(f"{self.name}: unexpected ready line {line!r}")
        self.unix_path = match["unix"]
        self.tcp_address = f"{match['host']}:{match['port']}"

    def address(self, transport: Transport) -> str:
        """The address as loadgen takes it: ``unix:PATH`` or ``tcp:HOST:PORT``."""
        return f"unix:{self.unix_path}" if transport == "unix" else f"tcp:{self.tcp_address}"

    def _sum(self, read: Callable[[int], float]) -> float:
        self.alive()
        total = 0.0
        for pid in _process_tree(self.pid):
            with contextlib.suppress(OSError, ValueError):  # a child that just exited
                total += read(pid)
        return total

    def tree_rss_kib(self) -> int:
        """VmRSS of the server and its children, in KiB."""

        def rss(pid: int) -> float:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
            return 0

        return int(self._sum(rss))

    def tree_fd_count(self) -> int:
        return int(self._sum(lambda pid: len(os.listdir(f"/proc/{pid}/fd"))))

    def tree_cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu(pid: int) -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        return self._sum(cpu)

    def wait_for_fds(self, minimum: int, what: str, timeout: float) -> None:
        """Poll until the server holds ``minimum`` descriptors (say, N accepted clients)."""
        deadline = time.monotonic() + timeout
        while (count := self.tree_fd_count()) < minimum:
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{self.name}: {what} not within {timeout}s ({count} fds)")
            time.sleep(POLL_INTERVAL)

    def alive(self) -> None:
        """Raise BenchmarkError if the server has exited (quoting the end of its stderr)."""
        if self.process.poll() is not None:
            raise BenchmarkError(
                f"{self.name} exited {self.process.returncode} mid-run;"
                f" its stderr ends: {self.stderr_tail()!r}"
            )

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of the server's stderr: trio_sock logs every client, so it may be large."""
        with self._stderr_path.open("rb") as stderr:
            stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - limit))
            return stderr.read().decode(errors="replace").strip()


def _cpu_set(cpus: str) -> set[int]:
    """taskset's CPU list (``0``, ``0,2``, ``0-3``) as a set."""
    chosen: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        chosen.update(range(int(first), int(last or first) + 1))
    return chosen


def _busy_seconds(cpus: set[int]) -> float:
    """User, nice and system time of ``cpus`` so far, all processes, from /proc/stat."""
    ticks = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name[3:].isdigit() and name.startswith("cpu") and int(name[3:]) in cpus:
            ticks += int(fields[0]) + int(fields[1]) + int(fields[2])
    return ticks / os.sysconf("SC_CLK_TCK")


class Lab:
    """Starts servers and load generators, pinned, in one temporary directory."""

    def __init__(self, settings: Settings, directory: Path, loadgen: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.loadgen = loadgen
        self._started = 0
        self.position = ""
        """Which repeat is running, for the progress lines."""

    def other_load(self) -> Callable[[float], float | None]:
        """Start watching the server's CPUs; the callable, given the server's own CPU
        seconds since, returns the share of those CPUs other processes took meanwhile.

        On a shared machine this says which figures were measured on a busy CPU.
        """
        if self.settings.server_cpus is None:
            return lambda _: None  # unpinned: the load generator shares the CPUs
        cpus = _cpu_set(self.settings.server_cpus)
        busy0, wall0 = _busy_seconds(cpus), time.monotonic()

        def share(server_seconds: float) -> float:
            other = _busy_seconds(cpus) - busy0 - server_seconds
            return max(0.0, other) / (time.monotonic() - wall0) / len(cpus)

        return share

    def _pin(self, cpus: str | int | None) -> list[str]:
        """The prefix that runs a command on ``cpus``, at the run's niceness."""
        prefix = ["nice", "-n", str(self.settings.nice)] if self.settings.nice else []
        return prefix + (["taskset", "-c", str(cpus)] if cpus is not None else [])

    def start(self, name: str) -> Server:
        self._started += 1
        # Short, and new for every start: sun_path holds 107 bytes, and a killed
        # baseline leaves its socket file behind.
        unix_path = str(self.directory / f"{self._started}.sock")
        command = self._pin(self.settings.server_cpus) + server_command(
            name, unix_path, self.settings
        )
        stderr = self.directory / f"{self._started}-{name}.stderr"
        return Server(name, command, stderr)

    def run_loadgen(
        self, mode: str, address: str, concurrency: int, size: int, *, echo: bool = False
    ) -> dict[str, Any]:
        """One load generator run; its JSON result (failures included, never raised)."""
        s = self.settings
        command = [
            *self._pin(s.loadgen_cpu),
            str(self.loadgen),
            f"--mode={mode}",
            f"--address={address}",
            f"--concurrency={concurrency}",
            f"--size={size}",
            f"--warmup={s.warmup}",
            f"--duration={s.duration}",
            *(["--sleep"] if s.loadgen_sleeps else []),
            *(["--echo"] if echo else []),
        ]
        timeout = s.warmup + s.duration + LOADGEN_SLACK
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise BenchmarkError(
                f"loadgen {mode} {address} still running after {timeout}s"
            ) from None
        lines = done.stdout.strip().splitlines()
        if not lines:
            raise BenchmarkError(
                f"loadgen {mode} {address} exited {done.returncode} with no result:"
                f" {done.stderr.strip()!r}"
            )
        result: dict[str, Any] = json.loads(lines[-1])
        result["stderr"] = done.stderr.strip()
        return result


# --- Throughput workloads ----------------------------------------------------------------


def _cases(workload: Workload) -> list[tuple[str, str, int, int]]:
    """(case, loadgen mode, concurrency, size) for each measurement of ``workload``."""
    if workload == "connect":
        return [("", "connect", CONNECT_CONCURRENCY, 1)]
    if workload == "pingpong":
        return [(f"c={c}", "pingpong", c, PINGPONG_SIZE) for c in PINGPONG_CONCURRENCY]
    return [("", "stream", STREAM_CONNECTIONS, STREAM_WRITE)]


def measure_throughput(lab: Lab, workload: Workload, name: str, repeat: int) -> list[Sample]:
    """One server start, every case of ``workload`` on both transports."""
    transports = lab.settings.transports
    if repeat % 2 == 0:  # neither transport always runs first, on a cold server
        transports = transports[::-1]
    planned = [(t, case) for t in transports for case in _cases(workload)]
    samples: list[Sample] = []
    try:
        with lab.start(name) as server:
            for transport, (case, mode, concurrency, size) in planned:
                sample = Sample(repeat, workload, case, transport, name)
                samples.append(sample)
                try:
                    cpu0, wall0 = server.tree_cpu_seconds(), time.monotonic()
                    other_load = lab.other_load()
                    result = lab.run_loadgen(
                        mode,
                        server.address(transport),
                        concurrency,
                        size,
                        echo=name in ECHO_SERVERS,
                    )
                    cpu1, wall1 = server.tree_cpu_seconds(), time.monotonic()
                    sample.other_load = other_load(cpu1 - cpu0)
                except BenchmarkError as exc:
                    sample.error = str(exc)
                    _report(lab, sample)
                    if server.exited() is not None:
                        raise  # the remaining cases fail for the same reason
                    continue
                sample.fill_from_loadgen(result, (cpu1 - cpu0) / (wall1 - wall0))
                if result["aborted"]:
                    # Refused or reset a hundred times: a figure from that means nothing.
                    sample.value = None
                    sample.error = "load generator gave up: " + "; ".join(result["messages"][:3])
                _report(lab, sample)
            exit_code = server.stop()
            if name == "trio_sock" and exit_code != 0:
                for sample in samples:
                    sample.notes.append(f"trio_sock exited {exit_code} after SIGTERM, not 0")
                _progress(f"    trio_sock exited {exit_code} after SIGTERM, not 0")
    except (BenchmarkError, OSError) as exc:
        done = {(s.transport, s.case) for s in samples}
        for transport, (case, *_) in planned:
            if (transport, case) not in done:
                sample = Sample(repeat, workload, case, transport, name, error=str(exc))
                samples.append(sample)
                _report(lab, sample)
    return samples


# --- Idle connections --------------------------------------------------------------------


def _connect(transport: Transport, server: Server) -> socket.socket:
    if transport == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = server.unix_path
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        host, _, port = server.tcp_address.rpartition(":")
        target = (host, int(port))
    try:
        sock.settimeout(ECHO_TIMEOUT)
        # Blocking: completes in the kernel, without the server's accept, because
        # open_idle never lets the listen queue fill.
        sock.connect(target)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_idle(
    transport: Transport, server: Server, clients: list[socket.socket], count: int, fds0: int
) -> None:
    """Add connections to ``clients`` until there are ``count``, at most IDLE_AHEAD unaccepted."""
    deadline = time.monotonic() + IDLE_TIMEOUT
    accepted = 0
    while len(clients) < count:
        if len(clients) - accepted >= IDLE_AHEAD:
            accepted = server.tree_fd_count() - fds0
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{server.name}: {accepted} accepted of {len(clients)}")
            if len(clients) - accepted >= IDLE_AHEAD:
                time.sleep(POLL_INTERVAL)
            continue
        clients.append(_connect(transport, server))


def echo(clients: Sequence[socket.socket], *, same: bool = False) -> list[str]:
    """Send one byte on every connection and check every reply; return the failures.

    Connection ``i`` sends ``i % 256`` and must read back ``(i + 1) % 256`` (or
    ``i % 256`` from an echo server, ``same``), so a reply that lands on the wrong
    connection is caught too.
    """
    delta = 0 if same else 1
    problems: list[str] = []
    with selectors.DefaultSelector() as selector:
        for i, sock in enumerate(clients):
            try:
                sock.send(bytes([i % 256]))  # one byte into an empty buffer: never blocks
            except OSError as exc:
                problems.append(f"connection {i}: send failed: {exc}")
                continue
            selector.register(sock, selectors.EVENT_READ, i)
        deadline = time.monotonic() + ECHO_TIMEOUT
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                problems.append(f"{len(selector.get_map())} connections got no reply in time")
                break
            for key, _ in selector.select(remaining):
                i = key.data
                selector.unregister(clients[i])
                try:
                    reply = clients[i].recv(16)
                except OSError as exc:
                    problems.append(f"connection {i}: recv failed: {exc}")
                    continue
                if reply != bytes([(i + delta) % 256]):
                    problems.append(f"connection {i}: sent {i % 256}, got {reply!r}")
    return problems


def measure_idle(lab: Lab, name: str, transport: Transport, repeat: int) -> list[Sample]:
    """One server start; N grows through the counts, RSS read at each; every client echoes."""
    counts = sorted(lab.settings.idle_counts)
    samples = [Sample(repeat, "idle", f"N={n}", transport, name) for n in counts]
    clients: list[socket.socket] = []
    try:
        with lab.start(name) as server:
            try:
                fds0 = server.tree_fd_count()
                rss0 = server.tree_rss_kib()
                for sample, count in zip(samples, counts, strict=True):
                    start = time.monotonic()
                    open_idle(transport, server, clients, count, fds0)
                    server.wait_for_fds(fds0 + count, "accepting", IDLE_TIMEOUT)
                    # Accepts are in order: an answer on the newest connection means the
                    # server has set up every one, up to its first read.
                    problems = echo(clients[-1:], same=name in ECHO_SERVERS)
                    if problems:
                        raise BenchmarkError(f"{name}: the newest connection: {problems[0]}")
                    rss = server.tree_rss_kib()
                    sample.value = (rss - rss0) / count
                    sample.seconds = time.monotonic() - start
                    sample.detail = {"rss0_kib": rss0, "rss_kib": rss, "count": count}
                problems = echo(clients, same=name in ECHO_SERVERS)
                # Every sample says how the final check went: it covers all of them.
                for sample in samples:
                    sample.verify_failures = len(problems)
                    sample.messages = problems[:8]
                    sample.detail["echoed"] = len(clients) - len(problems)
                    sample.detail["echo_total"] = len(clients)
            finally:
                for sock in clients:
                    sock.close()
            exit_code = server.stop()
            if name == "trio_sock" and exit_code != 0:
                samples[-1].notes.append(f"trio_sock exited {exit_code} after SIGTERM, not 0")
    except (BenchmarkError, OSError) as exc:
        for sample in samples:
            if sample.value is None:
                sample.error = str(exc)
    for sample in samples:
        _report(lab, sample)
    return samples


# --- Running it all ----------------------------------------------------------------------


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _report(lab: Lab, sample: Sample) -> None:
    """One progress line per sample, loud when something failed."""
    s = sample
    where = f"{lab.position} {s.workload:8} {s.case:7} {s.transport:4} {s.server:9}"
    if sample.error is not None:
        _progress(f"{where} FAILED: {sample.error}")
        return
    _progress(f"{where} {sample.describe()}")
    if sample.verify_failures or sample.errors:
        _progress(
            f"    !!! {sample.verify_failures} WRONG REPLIES, {sample.errors} I/O errors:"
            f" {'; '.join(sample.messages[:3])}"
        )


def run(settings: Settings, lab: Lab) -> list[Sample]:
    """Every measurement: for each repeat, for each workload, for each server."""
    samples: list[Sample] = []
    for repeat in range(1, settings.repeats + 1):
        # Each repeat starts with a different server: none always runs first or last.
        shift = (repeat - 1) % len(settings.servers)
        order = settings.servers[shift:] + settings.servers[:shift]
        for workload in settings.workloads:
            for name in order:
                lab.position = f"[{repeat}/{settings.repeats}]"
                if workload == "idle":
                    for transport in settings.transports:
                        samples += measure_idle(lab, name, transport, repeat)
                else:
                    samples += measure_throughput(lab, workload, name, repeat)
    return samples


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/perf.py",
        description="trio_sock against a C epoll server, bare Trio, asyncio and uvloop.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        action="store_true",
        help="one repeat of 1.5 s measurements (about 2 minutes)",
    )
    preset.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds in all, tiny counts, c/trio_sock/bare_trio: does it all work?",
    )
    parser.add_argument("--repeats", type=_positive_int, help="default 5 (1 with --quick)")
    parser.add_argument(
        "--duration", type=_positive_float, help="seconds per measurement; default 2"
    )
    parser.add_argument("--warmup", type=float, help="seconds before each measurement; default 0.5")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=WORKLOADS,
        metavar="WORKLOAD",
        help=f"only these workloads, of {', '.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=SERVERS,
        metavar="SERVER",
        help=f"only these servers, of {', '.join(SERVERS)} (c_nospin: the C server"
        " never polling, off by default)",
    )
    parser.add_argument("--transports", nargs="+", choices=TRANSPORTS, default=list(TRANSPORTS))
    parser.add_argument(
        "--idle-counts",
        nargs="+",
        type=_positive_int,
        metavar="N",
        help=f"idle connection counts; default {' '.join(map(str, IDLE_COUNTS))}",
    )
    parser.add_argument(
        "--trio-sock-args",
        default=DEFAULT_TRIO_SOCK_ARGS,
        metavar="ARGS",
        help="trio_sock server's arguments besides --unix and --tcp (one string)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="a source tree of another trio_sock (git worktree add DIR HEAD~1), served as"
        " trio_sock_base: name it in --servers",
    )
    parser.add_argument(
        "--server-cpus",
        default="0",
        help="taskset CPU list for the servers (say 0,2 for a server with workers)",
    )
    parser.add_argument(
        "--loadgen-cpu", type=int, default=1, help="the CPU of the load generator and this script"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    parser.add_argument(
        "--loadgen-sleeps",
        action="store_true",
        help="the load generator waits in epoll_wait instead of polling: for servers that"
        " need every CPU, such as --workers, unpinned",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the servers and the load generator: on a shared machine, -10 (as"
        " root) gives them the CPUs before other work; 0 leaves the others alone",
    )
    parser.add_argument(
        "--client-runs",
        type=int,
        default=CLIENT_RUNS,
        help="runs of the one-shot client start-up comparison (client_startup.py, in a"
        " fresh venv with trio_sock installed by pip); 0 skips it",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=HERE, help=f"where {RESULTS_MD} and {RESULTS_JSON} go"
    )
    parser.add_argument(
        "--report-from",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: write the report again from an earlier run's samples",
    )
    return parser


def settings_from(args: argparse.Namespace, notes: list[str]) -> Settings:
    """The run's settings: the preset's values, then each option given explicitly."""
    # Five repeats: this machine is shared, and a median of five shrugs off two
    # disturbed runs; 2 s windows keep the whole run near 12 minutes.
    repeats, duration, warmup = 5, 2.0, 0.5
    servers: tuple[str, ...] = ("c", "trio_sock", "bare_trio", "asyncio", "uvloop")
    counts: tuple[int, ...] = IDLE_COUNTS
    if args.quick:
        repeats, duration, warmup = 1, 1.5, 0.3
    if args.smoke:
        repeats, duration, warmup = 1, 0.3, 0.1
        servers, counts = ("c", "trio_sock", "bare_trio"), (100, 300)
    servers = tuple(args.servers) if args.servers else servers
    if importlib.util.find_spec("uvloop") is None and {"uvloop", "uvloop_echo"} & set(servers):
        servers = tuple(s for s in servers if not s.startswith("uvloop"))
        notes.append("uvloop: skipped, uvloop not installed (pip install -e '.[bench]')")
    counts = tuple(args.idle_counts) if args.idle_counts else counts
    limit = fd_limit()
    for count in [c for c in counts if c + FD_HEADROOM > limit]:
        notes.append(f"idle N={count}: skipped, needs {count + FD_HEADROOM} fds (limit {limit})")
    counts = tuple(c for c in dict.fromkeys(counts) if c + FD_HEADROOM <= limit)
    pinned = not args.no_pin and shutil.which("taskset") is not None
    if not args.no_pin and not pinned:
        notes.append("not pinned to CPUs: taskset not found")
    available = os.sched_getaffinity(0)
    if pinned and (len(available) < 2 or args.loadgen_cpu not in available):
        pinned = False
        notes.append(f"not pinned to CPUs: CPU {args.loadgen_cpu} is not among {available}")
    return Settings(
        repeats=args.repeats or repeats,
        duration=args.duration or duration,
        warmup=args.warmup if args.warmup is not None else warmup,
        workloads=tuple(w for w in WORKLOADS if not args.only or w in args.only),
        servers=servers,
        transports=tuple(args.transports),
        idle_counts=counts,
        trio_sock_args=tuple(shlex.split(args.trio_sock_args)),
        server_cpus=args.server_cpus if pinned else None,
        loadgen_cpu=args.loadgen_cpu if pinned else None,
        nice=args.nice,
        loadgen_sleeps=args.loadgen_sleeps,
        baseline=None if args.baseline is None else str(Path(args.baseline).resolve()),
    )


@dataclass
class Run:
    """One run's record: what the results files are written from."""

    machine: dict[str, Any]
    command: str
    settings: dict[str, Any]
    elapsed_seconds: float
    notes: list[str]
    server_commands: dict[str, str]
    samples: list[Sample]
    client: dict[str, Any] | None = None
    """client_startup.py's figures, when this run measured them."""

    @classmethod
    def load(cls, path: Path) -> Run:
        """A run as an earlier RESULTS.json recorded it (its summary is recomputed)."""
        data = json.loads(path.read_text())
        return cls(
            machine=data["machine"],
            command=data["command"],
            settings=data["settings"],
            elapsed_seconds=data["elapsed_seconds"],
            notes=data["notes"],
            server_commands=data["server_commands"],
            samples=[Sample(**sample) for sample in data["samples"]],
            client=data.get("client"),
        )

    def write(self, output_dir: Path) -> tuple[Path, list[Goal]]:
        """Write RESULTS.md and RESULTS.json into ``output_dir``; the Markdown's path
        and the targets."""
        servers = self.settings["servers"]
        rows = summarise(self.samples, servers)
        goals = targets(rows, self.settings["idle_counts"])
        output_dir.mkdir(parents=True, exist_ok=True)
        results_md = output_dir / RESULTS_MD
        results_md.write_text(
            render_markdown(
                machine=self.machine,
                settings=self.settings,
                command=self.command,
                elapsed=self.elapsed_seconds,
                rows=rows,
                goals=goals,
                samples=self.samples,
                notes=self.notes,
                commands={k: v for k, v in self.server_commands.items() if k in servers},
                client=self.client,
                analysis=ANALYSIS.read_text() if ANALYSIS.exists() else None,
            )
        )
        record = asdict(self) | {
            "summary": [asdict(row) for row in rows],
            "targets": [asdict(goal) for goal in goals],
        }
        record["samples"] = record.pop("samples")  # last: the long part
        (output_dir / RESULTS_JSON).write_text(json.dumps(record, indent=1) + "\n")
        return results_md, goals


def measure(args: argparse.Namespace, argv: Sequence[str]) -> Run | None:
    """Build, start every server in turn, load it; None if the C programs do not build."""
    wall0 = time.monotonic()
    raise_fd_limit()
    notes: list[str] = []
    settings = settings_from(args, notes)
    if settings.loadgen_cpu is not None:
        # This process runs the idle clients: on the load generator's CPU, not the server's.
        os.sched_setaffinity(0, {settings.loadgen_cpu})
    try:
        loadgen = build("loadgen")
        build("c_server")
    except (BenchmarkError, FileNotFoundError) as exc:
        _progress(f"perf.py: cannot build the C programs: {exc}")
        return None
    machine = machine_info() | {
        "uvloop": _version("uvloop"),
        "gcc": subprocess.run(
            ["gcc", "-dumpfullversion"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "pinning": (
            f"servers on CPU {settings.server_cpus}, load generator and idle clients on CPU"
            f" {settings.loadgen_cpu} (taskset)"
            if settings.server_cpus is not None
            else "none"
        ),
    }
    _progress(
        f"{machine['uname']}, {machine['cpus']} CPUs, Python {machine['python']};"
        f" pinning: {machine['pinning']}"
    )
    for note in notes:
        _progress(note)
    _progress(
        f"{settings.repeats} repeats of {', '.join(settings.workloads)} on"
        f" {', '.join(settings.servers)}; {settings.duration}s after {settings.warmup}s warm-up"
    )
    with tempfile.TemporaryDirectory(prefix="perf-") as tmp:  # short: sun_path is 108 bytes
        samples = run(settings, Lab(settings, Path(tmp), loadgen))
    client = None
    if args.client_runs > 0 and not args.smoke:
        _progress(f"one-shot client start-up: {args.client_runs} runs of each client")
        with tempfile.TemporaryDirectory(prefix="perf-venv-") as tmp:
            client = client_startup.measure(client_startup.make_venv(Path(tmp)), args.client_runs)
        _progress(
            f"  trio_sock client {client['trio_sock_ms']} ms, bare {client['bare_ms']} ms:"
            f" {client['ratio']}x"
        )
    return Run(
        machine=machine,
        command=shlex.join(["python", "benchmarks/perf.py", *argv]),
        settings=asdict(settings),
        elapsed_seconds=round(time.monotonic() - wall0, 1),
        notes=notes,
        server_commands={
            n: _shown(server_command(n, "PATH", settings))
            for n in SERVERS
            if not n.startswith("trio_sock_base") or settings.baseline is not None
        },
        samples=samples,
        client=client,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    record = Run.load(args.report_from) if args.report_from else measure(args, argv)
    if record is None:
        return 1
    results_md, goals = record.write(args.output_dir)
    shown = results_md.relative_to(ROOT) if results_md.is_relative_to(ROOT) else results_md
    _progress(f"wrote {shown} and {RESULTS_JSON} ({record.elapsed_seconds / 60:.1f} minutes)")
    for goal in goals:
        _progress(f"  target {goal.describe()}")
    failed = [s for s in record.samples if s.error is not None or s.verify_failures or s.errors]
    if failed:
        _progress(f"!!! {len(failed)} samples failed or saw wrong replies: see {shown}")
        return 1
    return 0


def _shown(command: Sequence[str]) -> str:
    """A command as a reader would type it: ``python``, paths from the project root."""
    words = []
    for word in command:
        if word == sys.executable:
            word = "python"
        elif Path(word).is_absolute() and Path(word).is_relative_to(ROOT):
            word = str(Path(word).relative_to(ROOT))
        words.append(word)
    return shlex.join(words)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
