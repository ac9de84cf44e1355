"""How much server memory an idle connection costs: trio_sock against bare Trio.

Each run starts one server as a subprocess on a Unix socket, reads its VmRSS
with no client, opens N idle connections from this process, waits until the
server has accepted every one, and reads VmRSS again: (RSS_N - RSS_0) / N is
the cost of one idle connection.  The baseline is the obvious Trio server
(``trio.serve_listeners`` and an ``async for`` echo loop, in this file), run
the same way in the same session, because this machine is shared and noisy:
the figure to read is the ratio, never an absolute number alone.  Each
measurement is repeated, the two servers interleaved, and medians reported.

At the end of each run every connection sends one byte and must get its
successor back, so "idle" never means "silently dropped".

Run from the project root (about a minute with the default counts)::

    python benchmarks/idle_memory.py                 # N = 1000, 5000, 15000
    python benchmarks/idle_memory.py --counts 200 2000 --repeats 5

It writes ``benchmarks/idle_memory.md`` and ``benchmarks/idle_memory.json``
(into ``--output-dir`` instead, if given).
``--bare-server PATH`` is internal: it runs the baseline server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import selectors
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import trio
from _machine import fd_limit, machine_info, raise_fd_limit
from _server_process import ROOT, STOP_TIMEOUT, BenchmarkError, ServerProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

Kind = Literal["trio_sock", "bare"]

#: The two servers, in the order of the first repeat; later repeats alternate it,
#: so neither server always runs on a machine the other has just warmed up.
KINDS: Final[tuple[Kind, ...]] = ("trio_sock", "bare")
#: Enough to see the per-connection cost over the interpreter's own noise (1000),
#: and the default soft open-file limit of 1024 left far behind (15000).
DEFAULT_COUNTS: Final = (1000, 5000, 15000)
#: Three runs make a median that one disturbed run cannot move.
DEFAULT_REPEATS: Final = 3
#: Descriptors each process needs besides the N connections: stdio, listener,
#: epoll, Trio's wakeup pair, pipes; also the slack trio_sock gets in --max-clients.
FD_HEADROOM: Final = 100
#: Connecting and accepting 15000 Unix sockets takes about a second; likewise.
ACCEPT_TIMEOUT: Final = 120.0
#: One byte there and back on every connection: a second or two at most.
ECHO_TIMEOUT: Final = 60.0
#: Poll interval while the server catches up (accepting, or closing clients).
POLL_INTERVAL: Final = 0.01
#: Trio's own default backlog (the kernel caps it at net.core.somaxconn), which
#: trio_sock uses too: the listen queue is kernel memory, not the server's RSS.
BARE_BACKLOG: Final = 0xFFFF
#: An idle timeout no run comes near: nothing may be dropped while measured.
IDLE_TIMEOUT: Final = 3600

HERE: Final = Path(__file__).resolve().parent
RESULTS_MD: Final = "idle_memory.md"
RESULTS_JSON: Final = "idle_memory.json"


# --- The baseline server -----------------------------------------------------------------


async def _bare_handler(stream: trio.SocketStream) -> None:
    async for data in stream:
        await stream.send_all(bytes((b + 1) % 256 for b in data))


async def _bare_server(path: str) -> None:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(BARE_BACKLOG)
    listener = trio.SocketListener(sock)
    print(f"bare trio waiting on unix:{path}", flush=True)
    await trio.serve_listeners(_bare_handler, [listener])


# --- Processes, descriptors and memory ---------------------------------------------------


def server_command(kind: Kind, path: str, count: int) -> list[str]:
    """The command line that starts ``kind`` on the Unix socket ``path`` for ``count`` clients."""
    if kind == "trio_sock":
        return [
            sys.executable,
            "-m",
            "trio_sock",
            "server",
            "--unix",
            path,
            "--max-clients",
            str(count + FD_HEADROOM),
            "--idle-timeout",
            str(IDLE_TIMEOUT),
            "--log-level",
            "warning",
        ]
    return [sys.executable, str(Path(__file__).resolve()), "--bare-server", path]


class Server(ServerProcess):
    """One of the two servers, its ready line read; a context manager that kills it."""

    def __init__(self, kind: Kind, path: str, count: int, stderr_path: Path) -> None:
        self.kind = kind
        super().__init__(kind, server_command(kind, path, count), stderr_path)

    def check_ready_line(self, line: str) -> None:
        if "waiting on unix:" not in line:
            raise BenchmarkError(f"{self.kind}: unexpected ready line {line!r}")

    def rss_kib(self) -> int:
        """VmRSS in KiB; raises BenchmarkError if the server has exited."""
        self.alive()
        return super().rss_kib()

    def fd_count(self) -> int:
        """How many descriptors the server holds; raises BenchmarkError if it has exited."""
        self.alive()
        return super().fd_count()

    def wait_for_fds(self, reached: Callable[[int], bool], what: str, timeout: float) -> float:
        """Poll the descriptor count until ``reached(count)``; return the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        while not reached(count := self.fd_count()):
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{self.kind}: {what} not within {timeout}s ({count} fds)")
            time.sleep(POLL_INTERVAL)
        return time.monotonic() - start


# --- Clients -----------------------------------------------------------------------------


def open_clients(path: str, count: int) -> list[socket.socket]:
    """Connect ``count`` non-blocking Unix sockets to ``path``; close them all on failure."""
    clients: list[socket.socket] = []
    deadline = time.monotonic() + ACCEPT_TIMEOUT
    try:
        while len(clients) < count:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(path)
            except BlockingIOError:
                # The listen queue is full: the server has not caught up yet.
                sock.close()
                if time.monotonic() > deadline:
                    raise BenchmarkError(
                        f"listen queue still full after {ACCEPT_TIMEOUT}s"
                        f" with {len(clients)} connected"
                    ) from None
                time.sleep(POLL_INTERVAL)
                continue
            except BaseException:
                sock.close()
                raise
            clients.append(sock)
    except BaseException:
        close_all(clients)
        raise
    return clients


def close_all(clients: Iterable[socket.socket]) -> None:
    for sock in clients:
        sock.close()


def echo_each(clients: Sequence[socket.socket]) -> list[str]:
    """Send one byte on every connection and check every reply; return the failures.

    Connection ``i`` sends ``i % 256`` and must read back ``(i + 1) % 256``,
    so a reply that lands on the wrong connection is caught too.
    """
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
                pending = len(selector.get_map())
                problems.append(f"{pending} connections got no reply within {ECHO_TIMEOUT}s")
                break
            for key, _ in selector.select(remaining):
                i, sock = key.data, clients[key.data]
                selector.unregister(sock)
                try:
                    reply = sock.recv(16)
                except OSError as exc:
                    problems.append(f"connection {i}: recv failed: {exc}")
                    continue
                if reply != bytes([(i + 1) % 256]):
                    problems.append(f"connection {i}: sent {i % 256}, got {reply!r}")
    return problems


def echo_one(sock: socket.socket, byte: int) -> None:
    """One byte there and back on ``sock``, within ECHO_TIMEOUT."""
    sock.send(bytes([byte]))
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        if not selector.select(ECHO_TIMEOUT):
            raise BenchmarkError(f"no reply on the last connection within {ECHO_TIMEOUT}s")
    reply = sock.recv(16)
    if reply != bytes([(byte + 1) % 256]):
        raise BenchmarkError(f"last connection: sent {byte}, got {reply!r}")


# --- One measurement ---------------------------------------------------------------------


@dataclass
class Run:
    """One server, one N, one repeat."""

    kind: Kind
    count: int
    repeat: int
    rss0_kib: int = 0
    """VmRSS after the ready line, before any connection."""
    rss_n_kib: int = 0
    """VmRSS with N idle connections accepted (and the last one echoed once)."""
    rss_echoed_kib: int = 0
    """VmRSS after every connection sent one byte and read the reply."""
    rss_closed_kib: int = 0
    """VmRSS once every client closed and the server closed its ends."""
    accept_seconds: float = 0.0
    """From the first connect to the server holding every connection."""
    served: int = 0
    """Connections whose one-byte echo at the end was right."""
    exit_code: int | None = None
    stderr: str = ""
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def kib_per_conn(self) -> float:
        return (self.rss_n_kib - self.rss0_kib) / self.count


def measure(kind: Kind, count: int, repeat: int, directory: Path) -> Run:
    """Run ``kind`` with ``count`` idle connections once; errors end up in ``Run.error``."""
    run = Run(kind, count, repeat)
    path = str(directory / f"{kind}-{count}-{repeat}.sock")
    stderr_path = directory / f"{kind}-{count}-{repeat}.stderr"
    clients: list[socket.socket] = []
    try:
        with Server(kind, path, count, stderr_path) as server:
            try:
                fds0 = server.fd_count()
                run.rss0_kib = server.rss_kib()
                start = time.monotonic()
                clients = open_clients(path, count)
                server.wait_for_fds(lambda n: n >= fds0 + count, "accepting every client", 60)
                run.accept_seconds = time.monotonic() - start
                # Accepts are FIFO: an answer on the last connection means every
                # client task exists and has run up to its first read.
                echo_one(clients[-1], 0x41)
                run.rss_n_kib = server.rss_kib()
                run.problems = echo_each(clients)
                run.served = count - len(run.problems)
                run.rss_echoed_kib = server.rss_kib()
                close_all(clients)
                server.wait_for_fds(lambda n: n <= fds0, "closing every client", STOP_TIMEOUT)
                run.rss_closed_kib = server.rss_kib()
                run.exit_code = server.stop()
            finally:
                close_all(clients)
                run.stderr = server.stderr().strip()
    except (BenchmarkError, OSError) as exc:
        run.error = str(exc)
    if kind == "trio_sock" and run.error is None and run.exit_code != 0:
        run.error = f"trio_sock exited {run.exit_code} after SIGTERM, not 0"
    return run


# --- Reports -----------------------------------------------------------------------------


@dataclass
class Summary:
    """The medians for one N, over the runs that succeeded."""

    count: int
    trio_sock_kib_per_conn: float | None
    bare_kib_per_conn: float | None
    ratio: float | None
    trio_sock_rss_n_kib: float | None
    bare_rss_n_kib: float | None
    trio_sock_rss0_kib: float | None
    bare_rss0_kib: float | None
    trio_sock_echoed_kib_per_conn: float | None
    bare_echoed_kib_per_conn: float | None
    trio_sock_runs: int
    bare_runs: int
    failed_runs: int


def _median(values: Iterable[float]) -> float | None:
    listed = list(values)
    return statistics.median(listed) if listed else None


def summarise(runs: Sequence[Run], count: int) -> Summary:
    ok = {
        kind: [r for r in runs if r.kind == kind and r.count == count and r.error is None]
        for kind in KINDS
    }

    def med(kind: Kind, value: Callable[[Run], float]) -> float | None:
        return _median(value(r) for r in ok[kind])

    ts, bare = med("trio_sock", lambda r: r.kib_per_conn), med("bare", lambda r: r.kib_per_conn)
    return Summary(
        count=count,
        trio_sock_kib_per_conn=ts,
        bare_kib_per_conn=bare,
        ratio=ts / bare if ts is not None and bare else None,
        trio_sock_rss_n_kib=med("trio_sock", lambda r: r.rss_n_kib),
        bare_rss_n_kib=med("bare", lambda r: r.rss_n_kib),
        trio_sock_rss0_kib=med("trio_sock", lambda r: r.rss0_kib),
        bare_rss0_kib=med("bare", lambda r: r.rss0_kib),
        trio_sock_echoed_kib_per_conn=med(
            "trio_sock", lambda r: (r.rss_echoed_kib - r.rss0_kib) / r.count
        ),
        bare_echoed_kib_per_conn=med("bare", lambda r: (r.rss_echoed_kib - r.rss0_kib) / r.count),
        trio_sock_runs=len(ok["trio_sock"]),
        bare_runs=len(ok["bare"]),
        failed_runs=sum(1 for r in runs if r.count == count and r.error is not None),
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _mib(kib: float | None) -> str:
    return "—" if kib is None else f"{kib / 1024:.1f} MiB"


def summary_table(summaries: Iterable[Summary]) -> list[str]:
    """The main result: the Markdown table, one line per N."""
    lines = [
        "| N | trio_sock KiB/conn | bare Trio KiB/conn | ratio trio_sock/bare"
        " | trio_sock RSS at N |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.count} | {_fmt(s.trio_sock_kib_per_conn)} | {_fmt(s.bare_kib_per_conn)}"
        f" | {_fmt(s.ratio)} | {_mib(s.trio_sock_rss_n_kib)} |"
        for s in summaries
    ]
    return lines


def render_markdown(
    machine: dict[str, object],
    summaries: Sequence[Summary],
    runs: Sequence[Run],
    skipped: Sequence[str],
    command: str,
) -> str:
    lines = [
        "# Idle-connection memory: trio_sock against bare Trio",
        "",
        "Generated by `benchmarks/idle_memory.py`; rerun with",
        "",
        "```",
        command,
        "```",
        "",
        f"- machine: `{machine['uname']}`, {machine['cpus']} CPUs"
        f" (load average at start {machine['load_average_at_start']})",
        f"- Python {machine['python']}, Trio {machine['trio']}, trio_sock {machine['trio_sock']}",
        f"- open-file limit (soft, raised to hard): {machine['open_file_limit']}",
        f"- date: {machine['date']}",
        "",
        "Each server runs as its own process on a Unix socket; N idle clients connect from",
        "the benchmark process.  KiB/conn = (VmRSS with N accepted - VmRSS before any",
        "connection) / N.  Medians of the successful runs, the two servers interleaved.",
        "The machine is shared: read the ratio, not the absolute figures.",
        "",
        *summary_table(summaries),
        "",
        "Other figures (medians): RSS before any connection (the bare server is this",
        "file, which imports more of the standard library); KiB/conn once every",
        "connection has also echoed one byte; runs that succeeded out of those attempted.",
        "",
        "| N | RSS₀ trio_sock / bare | KiB/conn after one echo each, trio_sock / bare"
        " | runs ok trio_sock / bare / failed |",
        "|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.count} | {_mib(s.trio_sock_rss0_kib)} / {_mib(s.bare_rss0_kib)}"
            f" | {_fmt(s.trio_sock_echoed_kib_per_conn)} / {_fmt(s.bare_echoed_kib_per_conn)}"
            f" | {s.trio_sock_runs} / {s.bare_runs} / {s.failed_runs} |"
        )
    lines += [
        "",
        "## Every run",
        "",
        "RSS after close is read once the server has closed every connection; how much",
        "it falls back depends on what CPython's and glibc's allocators return to the",
        "kernel, so it varies between runs and says nothing about leaks by itself.",
        "",
        "| repeat | server | N | RSS₀ | RSS at N | KiB/conn | RSS after echo | RSS after close"
        " | accept s | served | exit |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if r.error is not None:
            lines.append(f"| {r.repeat} | {r.kind} | {r.count} | failed: {r.error} | | | | | | | |")
            continue
        lines.append(
            f"| {r.repeat} | {r.kind} | {r.count} | {_mib(r.rss0_kib)} | {_mib(r.rss_n_kib)}"
            f" | {r.kib_per_conn:.2f} | {_mib(r.rss_echoed_kib)} | {_mib(r.rss_closed_kib)}"
            f" | {r.accept_seconds:.2f} | {r.served}/{r.count} | {r.exit_code} |"
        )
    lines += [
        "",
        "trio_sock must exit 0 on SIGTERM; the bare server has no signal handling, so",
        f"SIGTERM ends it with {-signal.SIGTERM} (killed by signal {int(signal.SIGTERM)}).",
    ]
    with_stderr = [r for r in runs if r.stderr]
    if with_stderr:
        lines += ["", "## Server stderr", ""]
        for r in with_stderr:
            lines += [f"- {r.kind}, N={r.count}, repeat {r.repeat}:", "", "  ```"]
            lines += [f"  {line}" for line in r.stderr.splitlines()[:20]]
            lines += ["  ```"]
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- {reason}" for reason in skipped]
    return "\n".join(lines) + "\n"


# --- Main --------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/idle_memory.py",
        description="Server memory per idle connection: trio_sock against bare Trio.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--counts",
        nargs="+",
        type=_positive_int,
        default=list(DEFAULT_COUNTS),
        metavar="N",
        help="numbers of idle connections to measure",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=DEFAULT_REPEATS,
        help="runs per server and N; medians are reported",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=HERE,
        help=f"where {RESULTS_MD} and {RESULTS_JSON} go",
    )
    parser.add_argument("--bare-server", metavar="PATH", help=argparse.SUPPRESS)
    return parser


def _progress(message: str) -> None:
    print(message, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.bare_server is not None:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(_bare_server, args.bare_server)
        return 0

    raise_fd_limit()
    limit = fd_limit()
    counts: list[int] = []
    skipped: list[str] = []
    for count in dict.fromkeys(args.counts):  # in order, without repeats
        if count + FD_HEADROOM > limit:
            reason = (
                f"N={count}: needs {count + FD_HEADROOM} descriptors per process,"
                f" the open-file limit is {limit}"
            )
            _progress(f"skipping {reason}")
            skipped.append(reason)
        else:
            counts.append(count)
    machine = machine_info()
    _progress(
        f"{machine['uname']}, {machine['cpus']} CPUs, Python {machine['python']},"
        f" Trio {machine['trio']}; counts {counts}, {args.repeats} repeats"
    )

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="idlemem-") as tmp:  # short: sun_path is 108 bytes
        for repeat in range(1, args.repeats + 1):
            order = KINDS if repeat % 2 else KINDS[::-1]
            for count in counts:
                for kind in order:
                    run = measure(kind, count, repeat, Path(tmp))
                    runs.append(run)
                    if run.error is not None:
                        _progress(f"[{repeat}] {kind:9} N={count:6}: FAILED: {run.error}")
                        continue
                    _progress(
                        f"[{repeat}] {kind:9} N={count:6}: {run.kib_per_conn:6.2f} KiB/conn"
                        f" (RSS {run.rss0_kib / 1024:.1f} -> {run.rss_n_kib / 1024:.1f} MiB,"
                        f" accepted in {run.accept_seconds:.2f}s,"
                        f" {run.served}/{count} echoed, exit {run.exit_code})"
                    )
                    for problem in run.problems[:5]:
                        _progress(f"    {problem}")

    summaries = [summarise(runs, count) for count in counts]
    command = "python benchmarks/idle_memory.py"
    if args.counts != list(DEFAULT_COUNTS):
        command += " --counts " + " ".join(map(str, args.counts))
    if args.repeats != DEFAULT_REPEATS:
        command += f" --repeats {args.repeats}"
    output_dir: Path = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    results_md, results_json = output_dir / RESULTS_MD, output_dir / RESULTS_JSON
    results_md.write_text(render_markdown(machine, summaries, runs, skipped, command))
    results_json.write_text(
        json.dumps(
            {
                "machine": machine,
                "command": command,
                "skipped": skipped,
                "summary": [asdict(s) for s in summaries],
                "runs": [asdict(r) | {"kib_per_conn": r.kib_per_conn} for r in runs],
            },
            indent=2,
        )
        + "\n"
    )
    _progress("")
    for line in summary_table(summaries):
        _progress(line)
    shown = results_md.relative_to(ROOT) if results_md.is_relative_to(ROOT) else results_md
    _progress(f"wrote {shown} and {RESULTS_JSON}")
    failed = sum(1 for r in runs if r.error is not None or r.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
