"""Dependencies point one way: the shared core imports no deployable, and a deployable imports
another only where that is its contract. Checked on the source (every import statement, at any
depth, and every `import_module("...")` literal), so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOYABLES = ("trainer", "inference_svc", "tokenizer_svc", "gateway", "sandbox")

# package folder -> the top-level packages it must never import
FORBIDDEN = {
    "chatforge": set(DEPLOYABLES),
    # The trainer reaches the sandbox only through chatforge.tools (ToolExecutor, entry points).
    "trainer": {"sandbox", "gateway", "tokenizer_svc"},
    # The engine's image holds the core and the engine only; tools are reached over HTTP.
    "inference-svc/inference_svc": set(DEPLOYABLES) - {"inference_svc"},
    "tokenizer-svc/tokenizer_svc": set(DEPLOYABLES) - {"tokenizer_svc"},
    "services/sandbox/sandbox": set(DEPLOYABLES) - {"sandbox"},
    # The gateway's local mode runs the engine in process (inference_svc, imported lazily there).
    "services/gateway/gateway": {"trainer", "sandbox", "tokenizer_svc"},
}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports stay inside the package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def violations(folder: str) -> list[str]:
    forbidden = FORBIDDEN[folder]
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in sorted(imported_modules(path)):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_package_imports_what_it_must_not(folder: str) -> None:
    assert (ROOT / folder).is_dir(), folder
    assert violations(folder) == []


def test_the_trainer_does_not_import_the_sandbox() -> None:
    # Named on its own: the seam issue 10 cut (trainer.eval.rollout imported sandbox.executor).
    assert not [v for v in violations("trainer") if " imports sandbox" in v]


def test_the_scan_sees_lazy_and_dynamic_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib\n"
        "def f():\n    from sandbox.executor import SandboxExecutor\n"
        "def g():\n    importlib.import_module('gateway.app')\n"
        "from . import sibling\n"
    )
    assert imported_modules(probe) == {"importlib", "sandbox.executor", "gateway.app"}
