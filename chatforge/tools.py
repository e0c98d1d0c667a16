"""The python tool: what the model's `<|python_start|> code <|python_end|>` calls reach.

One small contract shared by everything that runs model-written code: the inference engine's tool
loop, the HumanEval evaluation and RL rollouts call a `ToolExecutor`; the sandbox service's client
and its in-process executor both implement it. The result says how the run ended, and
`ToolResult.model_text()` is what the model sees between `<|output_start|>` and `<|output_end|>`.

`tool_executor_from(spec)` turns a setting (`--tools`) into an executor without importing any
deployable: a URL reaches the sandbox service over HTTP; a name is looked up among the executors
installed under the `chatforge.tool_executors` entry-point group (the sandbox package registers its
in-process executor as `local`, see pyproject.toml), so the trainer never imports the sandbox.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

Outcome = Literal["ok", "error", "timeout", "memory", "output_limit", "busy", "unavailable"]

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 256
DEFAULT_OUTPUT_BYTES = 16_384


@dataclass(frozen=True)
class ToolLimits:
    timeout_s: float = DEFAULT_TIMEOUT_S  # wall clock for the whole process tree
    memory_mb: int = DEFAULT_MEMORY_MB  # address space of each process
    output_bytes: int = DEFAULT_OUTPUT_BYTES  # stdout and stderr are each cut at this many bytes


@dataclass(frozen=True)
class ToolResult:
    outcome: Outcome
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    duration_s: float = 0.0
    truncated: bool = False  # output was cut at the cap
    message: str = ""  # why the run did not complete normally, for people and for the model

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def model_text(self, max_chars: int = 2_000) -> str:
        """The text fed back to the model: stdout, or the error, kept short (the context is small)."""
        if self.outcome == "ok":
            text = self.stdout
        elif self.outcome == "error":
            lines = self.stderr.strip().splitlines()
            text = lines[-1] if lines else f"exit status {self.exit_code}"
        else:
            text = f"[{self.outcome}] {self.message}".strip()
        return text if len(text) <= max_chars else text[:max_chars] + "…"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class ToolExecutor(Protocol):
    """Runs one snippet of untrusted Python and reports how it ended; never raises for bad code."""

    def run(self, code: str, limits: ToolLimits | None = None) -> ToolResult: ...


ENTRY_POINT_GROUP = "chatforge.tool_executors"  # name -> a ToolExecutor class (called with no arguments)


def installed_tool_executors() -> dict[str, EntryPoint]:
    """The executors plugins registered under ENTRY_POINT_GROUP, by name."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def tool_executor_from(spec: str) -> ToolExecutor | None:
    """The python tool for generation from a setting: "none" or "" (tool calls are not run), an
    http(s):// URL of the sandbox service, or the name of an installed executor ("local": the
    sandbox's executor in this process). Anything else is a ValueError naming the choices."""
    spec = spec.strip()
    if spec in ("", "none"):
        return None
    if spec.startswith(("http://", "https://")):
        from chatforge.sandbox_client import SandboxClient

        return SandboxClient(spec)
    installed = installed_tool_executors()
    if spec not in installed:
        names = ", ".join(sorted(installed)) or "none installed"
        raise ValueError(
            f"unknown tool executor {spec!r}: give 'none', a sandbox service URL (http://host:port) or an "
            f"installed executor ({ENTRY_POINT_GROUP} entry points: {names})"
        )
    entry = installed[spec]
    try:
        factory = entry.load()
    except ImportError as e:
        raise ValueError(
            f"tool executor {spec!r} ({entry.value}) is registered but cannot be imported here ({e}); "
            "pass the sandbox service's URL or none"
        ) from None
    return factory()
