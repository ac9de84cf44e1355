"""``--proxy-protocol`` behind the real balancers: HAProxy (``send-proxy``,
``send-proxy-v2``) and nginx's stream module (``proxy_protocol on``, the snippet of
``examples/deploy/nginx-stream.conf``), on loopback.

Each is run as the real program, in the foreground, with a configuration
written here; skipped with the reason where it is not installed (``.ci/run``
installs both).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from tests.helpers import connect, run_cli, wait_for_log
from tests.listen.test_systemd import free_tcp_port
from trio_sock.config.addresses import TcpAddress

if TYPE_CHECKING:
    from tests.helpers import Processes, ServerProcess

NGINX_STREAM: Final = Path("/usr/lib/nginx/modules/ngx_stream_module.so")

HAPROXY_CONFIG: Final = """\
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{front}
    default_backend back
backend back
    server trio_sock 127.0.0.1:{back} {option}
"""
NGINX_CONFIG: Final = """\
load_module {module};
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{}}
"""
NGINX_SNIPPET: Final = Path(__file__).resolve().parent.parent / "examples/deploy/nginx-stream.conf"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (CI installs it)")
@pytest.mark.parametrize("option", ["send-proxy", "send-proxy-v2"])
def test_haproxy_sends_the_header_and_trio_sock_logs_the_real_client(
    procs: Processes, option: str
) -> None:
    server = procs.server("--proxy-protocol", "--unix", str(procs.cwd / "sock"), "--tcp", "0")
    front = free_tcp_port()
    config = procs.cwd / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(front=front, back=server.tcp().port, option=option))
    procs.spawn(["haproxy", "-db", "-f", str(config)])
    _check(procs, server, front)


@pytest.mark.skipif(
    shutil.which("nginx") is None or not NGINX_STREAM.exists(),
    reason="needs nginx with its stream module (nginx, libnginx-mod-stream; CI installs them)",
)
def test_nginx_sends_the_header_and_trio_sock_logs_the_real_client(procs: Processes) -> None:
    server = procs.server("--proxy-protocol", "--unix", str(procs.cwd / "sock"), "--tcp", "0")
    front = free_tcp_port()
    config = procs.cwd / "nginx.conf"
    stream = NGINX_SNIPPET.read_text().format(front=front, back=server.tcp().port)
    config.write_text(NGINX_CONFIG.format(module=NGINX_STREAM, prefix=procs.cwd) + stream)
    procs.spawn(["nginx", "-p", str(procs.cwd), "-c", str(config)])
    _check(procs, server, front)


def _check(procs: Processes, server: ServerProcess, front: int) -> None:
    """A request through the balancer: the reply is right, and trio_sock logs the real
    client (this test's own socket), not the balancer."""
    # The balancer prints no ready line: the client's --wait retries until it listens.
    waited = run_cli("client", "--tcp", f"127.0.0.1:{front}", "--wait", "10", cwd=procs.cwd)
    assert waited.stdout == "char from server = B\n", waited.stderr
    with connect(TcpAddress("127.0.0.1", front)) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"Z")
        assert sock.recv(1) == b"["
    wait_for_log(server, f"peer=127.0.0.1:{port} ")
    assert server.stop() == 0
