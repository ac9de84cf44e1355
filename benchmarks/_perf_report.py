"""benchmarks/perf.py's samples, their medians and ratios, the targets, and RESULTS.md.

No I/O here but what the caller passes in: perf.py measures, this module only counts
and writes text, so the report can be rebuilt or tested from a RESULTS.json.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

Workload = Literal["connect", "pingpong", "stream", "idle"]
Transport = Literal["unix", "tcp"]

WORKLOADS: Final[tuple[Workload, ...]] = ("connect", "pingpong", "stream", "idle")
#: Every server perf.py knows, in the order of its tables.  c_nospin (the C server
#: without polling) only runs when asked for: it shows the cost of waking a CPU.
SERVERS: Final = (
    "c",
    "trio_sock",
    "bare_trio",
    "asyncio",
    "uvloop",
    "c_nospin",
    "trio_sock_2w",
    "trio_sock_base",
    "trio_sock_echo",
    "trio_sock_echo_async",
    "trio_sock_base_echo",
    "trio_sock_base_echo_async",
    "bare_trio_echo",
    "asyncio_echo",
    "uvloop_echo",
)
UNITS: Final[dict[Workload, str]] = {
    "connect": "connections/s",
    "pingpong": "requests/s",
    "stream": "MB/s",
    "idle": "KiB/conn",
}
TITLES: Final[dict[Workload, str]] = {
    "connect": "Connect per request",
    "pingpong": "Ping-pong on persistent connections",
    "stream": "Streaming",
    "idle": "Idle connections",
}
#: The two baselines every figure is divided by.
C: Final = "c"
BARE: Final = "bare_trio"


@dataclass
class Sample:
    """One server, one workload case, one transport, one repeat."""

    repeat: int
    workload: Workload
    case: str
    """``c=64`` (ping-pong's connections), ``N=15000`` (idle), or empty."""
    transport: Transport
    server: str
    value: float | None = None
    """In UNITS[workload]; None when the run failed."""
    error: str | None = None
    """Why the run failed: the server did not start, died, or the load generator broke."""
    latency_us: dict[str, float] = field(default_factory=dict)
    """Ping-pong and connect: mean, p50, p90, p99, p999, max of the requests counted."""
    server_cpu: float | None = None
    """The server's CPU time over the load generator's run, as a fraction of one CPU."""
    loadgen_busy: float | None = None
    """Fraction of the window the load generator's polls found work: below 1, it waited."""
    other_load: float | None = None
    """Share of the server's CPUs that other processes used meanwhile (0 on a quiet machine)."""
    ops: int = 0
    bytes: int = 0
    seconds: float = 0.0
    verify_failures: int = 0
    """Wrong replies: a wrong byte, bytes too many, a reply on the wrong connection."""
    errors: int = 0
    """I/O errors: refused, reset, closed early."""
    messages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def fill_from_loadgen(self, result: dict[str, Any], server_cpu: float) -> None:
        self.seconds = float(result["seconds"])
        self.ops, self.bytes = int(result["ops"]), int(result["bytes"])
        rate = (self.bytes / 1e6 if self.workload == "stream" else self.ops) / self.seconds
        self.value = rate
        self.latency_us = dict(result.get("latency_us", {}))
        self.server_cpu = server_cpu
        self.loadgen_busy = float(result["busy_fraction"])
        self.verify_failures = int(result["verify_failures"])
        self.errors = int(result["errors"])
        self.messages = list(result["messages"])
        self.detail = {
            k: result[k] for k in ("concurrency", "size", "retries", "still_open", "aborted")
        }
        if result.get("stderr"):
            self.detail["loadgen_stderr"] = result["stderr"][-2000:]

    def describe(self) -> str:
        """The figure just measured, for the progress line."""
        if self.value is None:
            return "no figure"
        if self.workload == "idle":
            d = self.detail
            return (
                f"{self.value:8.2f} KiB/conn (RSS {d['rss0_kib'] / 1024:.1f}"
                f" -> {d['rss_kib'] / 1024:.1f} MiB)"
            )
        text = f"{self.value:>11,.0f} {UNITS[self.workload]:13}"
        if self.server_cpu is not None and self.loadgen_busy is not None:
            text += f" server CPU {self.server_cpu:4.0%}, loadgen busy {self.loadgen_busy:4.0%}"
        if self.other_load is not None:
            text += f", others {self.other_load:4.0%}"
        if self.workload == "pingpong" and self.latency_us:
            lat = self.latency_us
            text += f"; p50 {lat['p50']:.0f} p99 {lat['p99']:.0f} max {lat['max']:.0f} µs"
        return text


@dataclass
class Row:
    """The medians of one server in one table."""

    workload: Workload
    case: str
    transport: Transport
    server: str
    unit: str
    median: float | None
    runs: int
    """Successful runs."""
    failed: int
    verify_failures: int
    errors: int
    vs_c: float | None
    """Median over repeats of this repeat's figure over the C server's."""
    vs_bare: float | None
    p50_us: float | None = None
    p99_us: float | None = None
    max_us: float | None = None
    server_cpu: float | None = None
    loadgen_busy: float | None = None
    quiet_runs: int = 0
    """Runs measured while other processes left the server's CPU alone; the figures
    above come from these alone when there are any."""


#: A sample during which other processes took more than this share of the server's
#: CPU is set aside whenever quieter samples of the same figure exist: on this shared
#: machine a figure measured on half a CPU says more about the neighbours than about
#: the server.  On a quiet machine every sample passes (others take a few percent).
DISTURBED: Final = 0.1


def _quiet(sample: Sample) -> bool:
    return sample.other_load is None or sample.other_load <= DISTURBED


def _trusted(samples: Sequence[Sample]) -> list[Sample]:
    """The samples measured on a quiet CPU, or all of them if none was."""
    return [s for s in samples if _quiet(s)] or list(samples)


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(mine: Sequence[Sample], base: Sequence[Sample]) -> float | None:
    """Median over repeats of mine / base, each pair measured minutes apart at most.

    A ratio per repeat, not a ratio of medians: when the machine's speed drifts
    between repeats, both figures of a pair drift together.  Only pairs measured on
    a quiet CPU count, when there are any.
    """
    by_repeat = {s.repeat: s for s in base if s.value}
    pairs = [(s, by_repeat[s.repeat]) for s in mine if s.repeat in by_repeat]
    quiet = [(a, b) for a, b in pairs if _quiet(a) and _quiet(b)]
    return _median(a.value / b.value for a, b in quiet or pairs if a.value is not None and b.value)


def table_keys(samples: Sequence[Sample]) -> list[tuple[Workload, str, Transport]]:
    """(workload, case, transport) of every table, in the order of the report."""
    seen = dict.fromkeys((s.workload, s.case, s.transport) for s in samples)

    def order(key: tuple[Workload, str, Transport]) -> tuple[int, int, int]:
        workload, case, transport = key
        number = int(case.split("=")[1]) if "=" in case else 0
        return WORKLOADS.index(workload), number, ("unix", "tcp").index(transport)

    return sorted(seen, key=order)


def summarise(samples: Sequence[Sample], servers: Sequence[str]) -> list[Row]:
    rows: list[Row] = []
    for workload, case, transport in table_keys(samples):
        group = [
            s
            for s in samples
            if (s.workload, s.case, s.transport) == (workload, case, transport) and s.error is None
        ]
        for server in servers:
            mine = [s for s in group if s.server == server and s.value is not None]
            trusted = _trusted(mine)
            attempted = [
                s
                for s in samples
                if (s.workload, s.case, s.transport, s.server)
                == (workload, case, transport, server)
            ]
            if not attempted:
                continue
            rows.append(
                Row(
                    workload=workload,
                    case=case,
                    transport=transport,
                    server=server,
                    unit=UNITS[workload],
                    median=_median(s.value for s in trusted),
                    runs=len(mine),
                    failed=len(attempted) - len(mine),
                    verify_failures=sum(s.verify_failures for s in attempted),
                    errors=sum(s.errors for s in attempted),
                    # The C server holds next to nothing per idle connection (the kernel's
                    # socket memory is not its RSS): a ratio to it would mean nothing.
                    vs_c=None
                    if workload == "idle"
                    else _ratio(mine, [s for s in group if s.server == C]),
                    vs_bare=_ratio(mine, [s for s in group if s.server == BARE]),
                    p50_us=_median(s.latency_us.get("p50") for s in trusted),
                    p99_us=_median(s.latency_us.get("p99") for s in trusted),
                    max_us=_median(s.latency_us.get("max") for s in trusted),
                    server_cpu=_median(s.server_cpu for s in trusted),
                    loadgen_busy=_median(s.loadgen_busy for s in trusted),
                    quiet_runs=sum(1 for s in mine if _quiet(s)),
                )
            )
    return rows


# --- Targets -----------------------------------------------------------------------------


@dataclass
class Goal:
    """One of trio_sock's performance targets, on one transport."""

    name: str
    transport: Transport
    measured: float | None
    bound: float
    at_most: bool
    """True: measured must be at most bound (memory); False: at least (speed)."""
    unit: str
    met: bool | None
    """None when the figure is missing (a failed run, or the workload not run)."""

    def describe(self) -> str:
        sign = "≤" if self.at_most else "≥"
        value = "—" if self.measured is None else f"{self.measured:.2f}{self.unit}"
        verdict = {True: "met", False: "NOT met", None: "not measured"}[self.met]
        goal = f"{sign} {self.bound}{self.unit}"
        return f"{self.name}, {self.transport}: {value} (goal {goal}): {verdict}"


#: trio_sock's targets: (name, workload, case, ratio to which baseline or None for an
#: absolute figure, bound, at_most, unit).  The idle case is filled in from the counts.
TARGETS: Final = (
    ("connections/s vs bare Trio", "connect", "", BARE, 2.5, False, "x"),
    ("ping-pong c=64 requests/s vs bare Trio", "pingpong", "c=64", BARE, 1.5, False, "x"),
    ("streaming MB/s vs the C server", "stream", "", C, 0.9, False, "x"),
    ("idle memory per connection", "idle", None, None, 3.5, True, " KiB"),
)


def targets(rows: Sequence[Row], idle_counts: Sequence[int]) -> list[Goal]:
    goals: list[Goal] = []
    # The idle target is stated at 15,000 clients; a smaller run says what it had.
    idle_case = f"N={max(idle_counts)}" if idle_counts else "N=15000"
    for name, workload, case, base, bound, at_most, unit in TARGETS:
        wanted = idle_case if case is None else case
        label = f"{name} at {wanted}" if workload == "idle" else name
        for transport in ("unix", "tcp"):
            row = next(
                (
                    r
                    for r in rows
                    if (r.workload, r.case, r.transport, r.server)
                    == (workload, wanted, transport, "trio_sock")
                ),
                None,
            )
            if row is None:
                continue
            measured = row.median if base is None else row.vs_bare if base == BARE else row.vs_c
            met = None if measured is None else measured <= bound if at_most else measured >= bound
            goals.append(Goal(label, transport, measured, bound, at_most, unit, met))
    return goals


# --- Markdown ----------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _runs(row: Row) -> str:
    text = f"{row.runs}"
    if row.quiet_runs < row.runs:
        text += f", {row.quiet_runs} quiet"
    if row.failed:
        text += f" (+{row.failed} failed)"
    if row.verify_failures or row.errors:
        text += f" **{row.verify_failures} wrong, {row.errors} errors**"
    return text


def _throughput_table(rows: Sequence[Row], latency: bool) -> list[str]:
    unit = rows[0].unit
    head = f"| server | {unit} | x C | x bare Trio |"
    rule = "|---|---:|---:|---:|"
    if latency:
        head += " p50 µs | p99 µs | max µs |"
        rule += "---:|---:|---:|"
    lines = [head + " server CPU | loadgen busy | runs |", rule + "---:|---:|---|"]
    digits = 0
    for r in rows:
        line = f"| {r.server} | {_num(r.median, digits)} | {_times(r.vs_c)} | {_times(r.vs_bare)} |"
        if latency:
            line += f" {_num(r.p50_us, 1)} | {_num(r.p99_us, 1)} | {_num(r.max_us)} |"
        lines.append(line + f" {_pct(r.server_cpu)} | {_pct(r.loadgen_busy)} | {_runs(r)} |")
    return lines


def _idle_table(rows: Sequence[Row], samples: Sequence[Sample]) -> list[str]:
    cases = list(dict.fromkeys(r.case for r in rows))
    largest = cases[-1]
    lines = [
        "| server | "
        + " | ".join(f"KiB/conn at {c}" for c in cases)
        + f" | x bare Trio at {largest} | RSS at {largest} | replies at the end | runs |",
        "|---|" + "---:|" * len(cases) + "---:|---:|---|---|",
    ]
    for server in dict.fromkeys(r.server for r in rows):
        mine = {r.case: r for r in rows if r.server == server}
        last = mine.get(largest)
        finals = [
            s
            for s in samples
            if s.workload == "idle"
            and s.server == server
            and s.case == largest
            and s.transport == rows[0].transport
            and s.value is not None
        ]
        rss = _median(s.detail.get("rss_kib") for s in finals)
        echoed = sum(int(s.detail.get("echoed", 0)) for s in finals)
        total = sum(int(s.detail.get("echo_total", 0)) for s in finals)
        figures = " | ".join(_num(mine[c].median, 2) if c in mine else "—" for c in cases)
        lines.append(
            f"| {server} | {figures} | {_times(last.vs_bare if last else None)}"
            f" | {_num(None if rss is None else rss / 1024, 1)} MiB | {echoed}/{total} ok"
            f" | {_runs(last) if last else '—'} |"
        )
    return lines


def render_markdown(
    *,
    machine: dict[str, Any],
    settings: dict[str, Any],
    command: str,
    elapsed: float,
    rows: Sequence[Row],
    goals: Sequence[Goal],
    samples: Sequence[Sample],
    notes: Sequence[str],
    commands: dict[str, str],
    client: dict[str, Any] | None = None,
    analysis: str | None = None,
) -> str:
    lines = [
        "# trio_sock performance: against a C epoll server, bare Trio, asyncio and uvloop",
        "",
        "Generated by `benchmarks/perf.py`; rerun from the project root with",
        "",
        "```",
        command,
        "```",
        "",
        f"- machine: `{machine['uname']}`, {machine['cpus']} CPUs"
        f" (load average at start {machine['load_average_at_start']}); shared and noisy:"
        " read the ratios, not the absolute figures",
        f"- Python {machine['python']}, Trio {machine['trio']}, trio_sock"
        f" {machine['trio_sock']}, uvloop {machine['uvloop'] or 'not installed'},"
        f" gcc {machine['gcc']} (`-O2`)",
        f"- date: {machine['date']}; the run took {elapsed / 60:.1f} minutes",
        f"- pinning: {machine['pinning']}; niceness {settings['nice']}"
        + ("; the load generator sleeps in epoll_wait" if settings.get("loadgen_sleeps") else ""),
        f"- each measurement: {settings['duration']} s after a {settings['warmup']} s"
        f" warm-up; {settings['repeats']} repeats, interleaved (for each repeat, for each"
        " workload, for each server, the first server rotating); medians reported",
        "- x C and x bare Trio: the median over repeats of the ratio to that baseline"
        " measured in the same repeat (higher is faster; for memory, lower is smaller)",
        f"- quiet samples: those during which other processes took at most {DISTURBED:.0%}"
        " of the server's CPU; every figure and ratio comes from the quiet samples alone"
        " when there are any (the runs column counts them when some were not)",
        "- server CPU: the server's CPU time during the load, as a share of its one CPU;"
        " loadgen busy: the share of the window in which the load generator's polls found"
        " work (below 100% it was waiting for the server, so it was not the bottleneck)",
        *_contention(samples),
        "",
        "## Targets",
        "",
        "trio_sock's targets, each on both transports; the ratios are the ones in the"
        " tables below.",
        "",
        "| target | transport | measured | goal | |",
        "|---|---|---:|---:|---|",
    ]
    for g in goals:
        sign = "≤" if g.at_most else "≥"
        verdict = {True: "met", False: "**NOT met**", None: "not measured"}[g.met]
        value = "—" if g.measured is None else f"{g.measured:.2f}{g.unit}"
        lines.append(
            f"| {g.name} | {g.transport} | {value} | {sign} {g.bound}{g.unit} | {verdict} |"
        )
    if client is not None:
        verdict = "met" if client["met"] else "**NOT met**"
        lines.append(
            f"| one-shot client wall time vs a bare Trio client | unix | {client['ratio']:.2f}x"
            f" | ≤ {client['target']}x | {verdict} |"
        )
    if not goals and client is None:
        lines.append("| (no target measured in this run) | | | | |")
    if analysis:
        lines += ["", analysis.strip()]

    lines += [
        "",
        "## The servers",
        "",
        "Each started afresh for every workload (and for each transport of the idle one),",
        "listening on a Unix socket and a TCP port at once:",
        "",
    ]
    about = {
        "c": "`c_server.c`: one thread, non-blocking, level-triggered epoll; polls while"
        " busy (see its header) — the physical limit",
        "c_nospin": "the same C server, sleeping in `epoll_wait` whenever it is idle",
        "trio_sock": "this project, as run by its command line",
        "trio_sock_2w": "the same, with two worker processes (`--workers 2 --reuse-port`)",
        "trio_sock_base": "the same arguments, served from the --baseline source tree"
        " (the code before a change)",
        "trio_sock_echo": "trio_sock serving an echo sans-I/O class"
        " (`--handler echo_handlers:Echo`, `servers/echo_handlers.py`)",
        "trio_sock_echo_async": "trio_sock serving an echo async handler on `Connection`"
        " (`--handler echo_handlers:echo`)",
        "trio_sock_base_echo": "the echo sans-I/O class, served from the --baseline tree",
        "trio_sock_base_echo_async": "the echo async handler, served from the --baseline tree",
        "bare_trio_echo": "`servers/bare_trio_server.py --echo`: the same loop, echoing",
        "asyncio_echo": "`servers/asyncio_server.py --echo`: an echoing `asyncio.Protocol`",
        "uvloop_echo": "the same echoing protocol on uvloop",
        "bare_trio": "`servers/bare_trio_server.py`: `trio.serve_listeners` and an"
        " `async for` loop that translates each chunk",
        "asyncio": "`servers/asyncio_server.py`: an `asyncio.Protocol` (the faster of"
        " asyncio's idiomatic APIs; `start_server` streams were slower)",
        "uvloop": "the same asyncio code on uvloop",
    }
    for name, cmd in commands.items():
        lines.append(f"- **{name}**: {about[name]}: `{cmd}`")

    lines += [
        "",
        "The load generator, `loadgen.c`, is one thread on its own CPU that polls epoll",
        "without sleeping and checks every reply byte.",
    ]

    for workload in dict.fromkeys(r.workload for r in rows):
        lines += ["", f"## {TITLES[workload]} ({UNITS[workload]})", ""]
        lines += _workload_intro(workload, settings)
        keys = list(dict.fromkeys((r.case, r.transport) for r in rows if r.workload == workload))
        if workload == "idle":
            keys = list(dict.fromkeys(("", t) for _, t in keys))
        for case, transport in keys:
            title = f"{transport}" + (f", {case}" if case else "")
            lines += ["", f"### {title}", ""]
            if workload == "idle":
                lines += _idle_table(
                    [r for r in rows if r.workload == "idle" and r.transport == transport],
                    samples,
                )
            else:
                lines += _throughput_table(
                    [
                        r
                        for r in rows
                        if (r.workload, r.case, r.transport) == (workload, case, transport)
                    ],
                    latency=workload == "pingpong",
                )

    lines += _headroom(rows)
    if client is not None:
        lines += _client_section(client)

    failed = [s for s in samples if s.error is not None or s.verify_failures or s.errors]
    lines += ["", "## Failures", ""]
    if not failed:
        lines.append("None: every reply of every run was right, and every run completed.")
    for s in failed:
        what = s.error or (
            f"{s.verify_failures} wrong replies, {s.errors} I/O errors: {'; '.join(s.messages)}"
        )
        lines.append(
            f"- repeat {s.repeat}, {s.workload} {s.case} {s.transport}, {s.server}: {what}"
        )
    extra = list(notes) + sorted({n for s in samples for n in s.notes})
    if extra:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in extra]
    lines += ["", "Every sample, with its latencies and CPU figures, is in `RESULTS.json`."]
    return "\n".join(lines) + "\n"


def _contention(samples: Sequence[Sample]) -> list[str]:
    """How much of the server's CPU other processes took during the measurements."""
    loads = sorted(s.other_load for s in samples if s.other_load is not None)
    if not loads:
        return []
    median = statistics.median(loads)
    lines = [
        f"- other processes on the server's CPU during the measurements: median"
        f" {median:.0%}, worst {loads[-1]:.0%} (per sample in `RESULTS.json`, `other_load`)"
    ]
    if median > DISTURBED:
        lines.append(
            "- **the machine was busy with other work during this run: the servers got less"
            " of their CPU than they could use, and the ratios are less reliable than usual"
            " (`--nice -10` gives the benchmark priority)**"
        )
    return lines


def _workload_intro(workload: Workload, settings: dict[str, Any]) -> list[str]:
    if workload == "connect":
        return [
            "64 connections in flight; each connects, sends one byte, reads its successor,",
            "shuts down its side and waits for the server's EOF before closing: a request is",
            "a whole connection, the server's close included.  TCP clients spread over",
            "127.0.0.1-127.0.0.64 as source addresses, so that TIME_WAIT never runs out of",
            "ports.  On TCP, the loopback handshake is processed mostly on the connecting",
            "side's CPU, so the C server's figure there is bounded by the load generator.",
        ]
    if workload == "pingpong":
        return [
            "Persistent connections, each sending 64 bytes (different each time) and waiting",
            "for the whole reply before the next; latency is from the send to the last reply",
            "byte, medians over repeats of each run's percentiles.",
        ]
    if workload == "stream":
        return [
            "One connection writes 256 KiB buffers as fast as the server takes them while",
            "reading the replies (full duplex, edge-triggered epoll); MB/s = 10^6 reply",
            "bytes per second, every byte checked.",
        ]
    counts = ", ".join(f"{n:,}" for n in settings["idle_counts"])
    return [
        f"N idle clients ({counts}) connect from this script, in one server per transport",
        "and repeat, N growing; KiB/conn = (VmRSS with N accepted - VmRSS before any",
        "client) / N.  At the end every connection sends one byte and must get its",
        "successor back.",
    ]


def _headroom(rows: Sequence[Row]) -> list[str]:
    """Evidence that the load generator was never the bottleneck for trio_sock."""
    pairs = []
    for r in rows:
        if r.server != "trio_sock" or r.workload == "idle":
            continue
        c = next(
            (
                x
                for x in rows
                if (x.workload, x.case, x.transport, x.server)
                == (r.workload, r.case, r.transport, C)
            ),
            None,
        )
        if c is not None:
            pairs.append((r, c))
    if not pairs:
        return []
    lines = [
        "",
        "## Load generator headroom",
        "",
        "The same load generator, driving the C server, against driving trio_sock: how",
        "far beyond trio_sock's figure it went, and how busy it was with each.",
        "",
        "| workload | transport | C / trio_sock | loadgen busy with trio_sock | with C |",
        "|---|---|---:|---:|---:|",
    ]
    for ts, c in pairs:
        ratio = None if ts.vs_c is None else 1 / ts.vs_c if ts.vs_c else None
        name = f"{ts.workload} {ts.case}".strip()
        lines.append(
            f"| {name} | {ts.transport} | {_times(ratio)} | {_pct(ts.loadgen_busy)}"
            f" | {_pct(c.loadgen_busy)} |"
        )
    return lines


def _client_section(client: dict[str, Any]) -> list[str]:
    """``client_startup.py``'s figures: the one-shot client against a bare Trio one."""
    extra = ", ".join(f"`{name}` {us / 1000:.1f} ms" for name, us in client["extra_imports_us"][:8])
    return [
        "",
        "## One-shot client start-up (ms)",
        "",
        "`python -m trio_sock client --unix PATH` against the obvious Trio client"
        " (`trio.open_unix_socket`, one byte there and back, print it), both from a fresh"
        " venv where `pip install .` put trio_sock, against the same server; runs"
        " interleaved, medians (`benchmarks/client_startup.py`).",
        "",
        "| client | wall time, median | x bare Trio client | runs |",
        "|---|---:|---:|---:|",
        f"| trio_sock | {client['trio_sock_ms']:.1f} | {client['ratio']:.2f}x | {client['runs']} |",
        f"| bare Trio | {client['bare_ms']:.1f} | 1.00x | {client['runs']} |",
        "",
        f"What trio_sock's client imports beyond the bare one (`-X importtime`, self): {extra}.",
    ]
