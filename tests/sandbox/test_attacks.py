"""The attack list, over HTTP against a real service: each attack is contained, and the service
still answers afterwards (checked after every test)."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from chatforge.tools import ToolLimits

from .conftest import SERVICE_SLOTS, Service, leftover_pids

# Generous where the test is not about time: the shared test host can be heavily loaded.
ROOMY = ToolLimits(timeout_s=15.0)


@pytest.fixture(autouse=True)
def service_survives(service: Service) -> Iterator[None]:
    yield
    assert service.client.healthy(), "service stopped answering /healthz"
    after = service.client.run("print('still here')", ROOMY)
    assert after.outcome == "ok" and after.stdout == "still here\n", after
    run_uids = service.client.info()["run_uids"]
    assert len(run_uids) == (SERVICE_SLOTS if os.geteuid() == 0 else 0)
    assert leftover_pids(run_uids) == [], "a run left processes behind"


def test_host_loopback_server_is_unreachable(service: Service) -> None:
    accepted: list[object] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    accepted.append(server.accept()[0])
                except OSError:
                    continue

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        code = f"""
import socket
for host in ("127.0.0.1", "localhost", "::1"):
    try:
        socket.create_connection((host, {port}), timeout=1)
        print("CONNECTED", host)
    except OSError as e:
        print("blocked", host, type(e).__name__)
"""
        result = service.client.run(code, ROOMY)
        stop.set()
        t.join()
    assert result.outcome == "ok", result
    assert "CONNECTED" not in result.stdout
    assert result.stdout.count("blocked") == 3
    assert accepted == [], "the sandbox reached a server on the host's loopback"


def test_name_resolution_fails(service: Service) -> None:
    # No names are resolved for real: the run has no network and no /etc (no hosts, no resolv.conf).
    code = """
import os, socket
print("resolv.conf", os.path.exists("/etc/resolv.conf"))
for name in ("localhost", "example.invalid"):
    try:
        print("RESOLVED", name, socket.getaddrinfo(name, 80))
    except OSError as e:
        print("unresolved", name, type(e).__name__)
"""
    result = service.client.run(code, ROOMY)
    assert result.outcome == "ok", result
    assert "resolv.conf False" in result.stdout
    assert "RESOLVED" not in result.stdout and result.stdout.count("unresolved") == 2


def test_fork_bomb_is_contained(service: Service) -> None:
    code = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    result = service.client.run(code, ToolLimits(timeout_s=1.0))
    assert result.outcome == "timeout", result
    assert result.duration_s < 3.0


def test_memory_bomb_hits_the_memory_limit(service: Service) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"
    result = service.client.run(code, ToolLimits(timeout_s=15.0, memory_mb=128))
    assert result.outcome == "memory", result
    assert "MemoryError" in result.stderr
    huge = service.client.run("x = bytearray(10**12)", ROOMY)
    assert huge.outcome == "memory", huge


def test_infinite_loop_is_killed_at_the_timeout(service: Service) -> None:
    result = service.client.run("while True:\n    pass\n", ToolLimits(timeout_s=1.0))
    assert result.outcome == "timeout", result
    assert 1.0 <= result.duration_s < 2.5
    assert "1 s" in result.message


def test_print_loop_is_cut_at_the_output_cap(service: Service) -> None:
    result = service.client.run(
        "while True:\n    print('spam' * 20)\n", ToolLimits(timeout_s=30.0, output_bytes=4096)
    )
    assert result.outcome == "output_limit", result
    assert result.truncated
    assert 0 < len(result.stdout.encode()) <= 4096
    assert result.duration_s < 15.0, "the run should be stopped at the cap, not at its timeout"


def test_writes_outside_tmp_fail_and_tmp_is_private(service: Service, tmp_path: Path) -> None:
    host_target = tmp_path / "written-from-sandbox"
    marker = f"/tmp/sbx-marker-{uuid.uuid4().hex}"
    code = f"""
for path in ("/x", "/usr/x", "/etc/x", "/sandbox/main.py", "/proc/x", {str(host_target)!r}, {str(Path.cwd())!r} + "/x"):
    try:
        open(path, "w").write("pwned")
        print("WROTE", path)
    except OSError as e:
        print("denied", path, type(e).__name__)
open({marker!r}, "w").write("inside")
print("tmp ok")
"""
    result = service.client.run(code, ROOMY)
    assert result.outcome == "ok", result
    assert "WROTE" not in result.stdout and result.stdout.count("denied") == 7
    assert "tmp ok" in result.stdout
    assert not host_target.exists()
    assert not os.path.exists(marker), "the sandbox's /tmp is the host's /tmp"
    again = service.client.run(f"import os; print(os.path.exists({marker!r}))", ROOMY)
    assert again.stdout == "False\n", "a run's /tmp survived into the next run"


def test_secrets_of_host_and_service_are_invisible(service: Service) -> None:
    code = f"""
import glob, os
found = []
for path in ["/etc/shadow", "/etc/passwd", {str(service.workdir / "secret.txt")!r}, "/proc/{service.pid}/environ"]:
    try:
        found.append(open(path).read())
        print("READ", path)
    except OSError as e:
        print("denied", path, type(e).__name__)
for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
    try:
        found.append(open(path, "rb").read().decode(errors="replace"))
    except OSError:
        pass
found.append(repr(dict(os.environ)))
found.append(repr(os.listdir("/")))
print("LEAK" if any({service.secret!r} in text for text in found) else "no secret")
print("env", sorted(os.environ))
"""
    result = service.client.run(code, ROOMY)
    assert result.outcome == "ok", result
    assert service.secret not in result.stdout + result.stderr
    assert "no secret" in result.stdout and "READ" not in result.stdout
    assert "SANDBOX_TEST_SECRET" not in result.stdout


def test_ctypes_os_system_and_subprocess_stay_inside(service: Service) -> None:
    code = """
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
print("ptrace", libc.ptrace(0, 0, 0, 0), ctypes.get_errno())
print("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None), ctypes.get_errno())
print("unshare", libc.unshare(0x10000000), ctypes.get_errno())
print("setuid0", libc.setuid(0), ctypes.get_errno())
print("system", os.system("cat /etc/shadow 2>/dev/null") != 0)
out = subprocess.run(["/bin/sh", "-c", "id -u; ls /root /home /etc 2>&1 | head -3"], capture_output=True, text=True)
print("sub", out.stdout.split())
"""
    result = service.client.run(code, ROOMY)
    assert result.outcome == "ok", result
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines["ptrace"] == "-1 1"  # EPERM from the seccomp filter
    assert lines["mount"] == "-1 1"
    assert lines["unshare"] == "-1 1"
    assert lines["setuid0"].startswith("-1")
    assert lines["system"] == "True"
    assert lines["sub"].startswith("['65534'")


def test_signalling_the_parent_and_everyone_harms_nothing(service: Service) -> None:
    code = f"""
import os, signal
for target in (os.getppid(), 1, {service.pid}, -1):
    try:
        os.kill(target, signal.SIGKILL)
        print("sent", target)
    except OSError as e:
        print("failed", target, type(e).__name__)
print("after", flush=True)
"""
    result = service.client.run(code, ROOMY)
    # Whatever it managed inside its own pid namespace, the service and the run's answer survive.
    assert result.outcome in ("ok", "error"), result
    assert f"sent {service.pid}" not in result.stdout
    assert os.path.exists(f"/proc/{service.pid}")


def test_background_processes_are_gone_after_the_run(service: Service) -> None:
    code = """
import os, subprocess
subprocess.Popen(["sleep", "60"], start_new_session=True)
os.system("nohup sleep 61 >/dev/null 2>&1 &")
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        import time
        time.sleep(62)
    os._exit(0)
print("left them running")
"""
    result = service.client.run(code, ROOMY)
    assert result.outcome == "ok", result
    assert "left them running" in result.stdout
    assert leftover_pids(service.client.info()["run_uids"]) == []


def test_fifty_concurrent_runs_complete_or_get_busy(service: Service) -> None:
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda i: service.client.run(f"print({i} * 2)", ROOMY), range(50)))
    outcomes = [r.outcome for r in results]
    assert set(outcomes) <= {"ok", "busy"}, outcomes
    ok = [(i, r) for i, r in enumerate(results) if r.ok]
    assert len(ok) >= SERVICE_SLOTS
    assert all(r.stdout == f"{i * 2}\n" for i, r in ok)
    assert outcomes.count("busy") <= 50 - SERVICE_SLOTS
    assert all("busy" in r.message for r in results if r.outcome == "busy")
    info = service.client.info()
    assert info["running"] == 0 and info["waiting"] == 0
    metrics = httpx.get(service.url + "/metrics").text
    assert 'chatforge_sandbox_executions_total{outcome="ok"}' in metrics
    assert 'chatforge_sandbox_isolation_mode{mode="namespaces"} 1.0' in metrics
    if "busy" in outcomes:
        assert 'chatforge_sandbox_executions_total{outcome="busy"}' in metrics
