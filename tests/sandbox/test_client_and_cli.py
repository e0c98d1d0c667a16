"""The HTTP client's error mapping and the `chatforge sandbox` commands."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import httpx
import pytest

from chatforge.cli import build_parser, main
from chatforge.sandbox_client import SandboxClient
from chatforge.tools import ToolLimits

from .conftest import Service


def test_client_runs_and_reports_limits(service: Service) -> None:
    result = service.client.run("import sys; print('out'); print('err', file=sys.stderr); sys.exit(2)")
    assert (result.outcome, result.stdout, result.stderr, result.exit_code) == ("error", "out\n", "err\n", 2)
    info = service.client.info()
    assert info["mode"] == "namespaces" and "seccomp" in info["layers"]


def test_client_raises_for_limits_beyond_the_service_maxima(service: Service) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        service.client.run("print(1)", ToolLimits(timeout_s=10_000))


def test_malformed_requests_get_4xx_with_a_message(service: Service) -> None:
    resp = httpx.post(service.url + "/v1/run", json={"code": 5, "nope": 1})
    assert resp.status_code == 422 and "nope" in resp.text
    resp = httpx.post(service.url + "/v1/run", json={"code": "print(1)", "memory_mb": 1})
    assert resp.status_code == 400 and "memory_mb" in resp.json()["detail"]
    resp = httpx.post(service.url + "/v1/run", json={"code": "#" * (8 * 1024 * 1024)})
    assert resp.status_code == 413 and "limit" in resp.json()["detail"]


def test_client_reports_an_unreachable_service_as_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the client connects
    with SandboxClient(f"http://127.0.0.1:{port}") as client:
        result = client.run("print(1)")
        assert not client.healthy()
    assert result.outcome == "unavailable" and str(port) in result.message


def test_cli_surface() -> None:
    parser = build_parser()
    args = parser.parse_args(["sandbox", "serve", "--port", "0", "--mode", "weak"])
    assert (args.port, args.mode) == (0, "weak")
    args = parser.parse_args(["sandbox", "run", "-c", "print(1)", "--timeout-s", "2"])
    assert (args.code, args.timeout_s) == ("print(1)", 2.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["sandbox", "run"])  # needs a file or -c


def test_cli_run_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "run", "-c", "print(6 * 7)"]) == 0
    assert capsys.readouterr().out == "42\n"
    assert main(["sandbox", "run", "-c", "while True: pass", "--timeout-s", "0.5", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["outcome"] == "timeout"


def test_cli_run_against_the_service(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "run", "--url", service.url, "-c", "raise SystemExit(5)"]) == 1
    assert "[error] exit status 5" in capsys.readouterr().err


def test_cli_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "info", "--mode", "weak"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "weak" and "rlimits" in info["layers"]


def test_module_entry_point_and_no_torch_in_the_image_path() -> None:
    # What the image runs: `python -m sandbox`, with torch made unimportable.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import sandbox.app, chatforge.sandbox_client\n"
        "from sandbox.__main__ import main\n"
        "sys.exit(main(['run', '-c', 'print(40 + 2)']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "42\n"


def test_importing_chatforge_does_not_import_httpx() -> None:
    code = "import sys, chatforge, chatforge.tools; print('httpx' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
