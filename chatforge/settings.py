"""Loading a service's `Settings` once, at start, with errors that say which variable to fix.

Every service has one pydantic-settings class read from `CHATFORGE_<SERVICE>_*` variables (plus the
two every chatforge process shares, `CHATFORGE_ARTIFACTS` and `REDIS_URL`); CLI flags override
them. A bad value is reported by the variable (and flag) that set it, all problems at once.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

# Fields read from variables without the service's prefix (their validation aliases).
SHARED_ENV = {"artifacts_root": "CHATFORGE_ARTIFACTS", "redis_url": "REDIS_URL"}

T = TypeVar("T")


class SettingsError(ValueError):
    """Settings that cannot start the service; the message names each variable to fix."""


def load_settings(cls: type[T], what: str, env_prefix: str, overrides: dict[str, Any]) -> T:
    """`cls()` from the environment, `overrides` (CLI flags, tests) winning; None means unset."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return cls(**given)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = [str(part) for part in err["loc"]]
            field = loc[0] if loc else ""
            if field:
                # a nested field (engine.num_blocks) is ENGINE__NUM_BLOCKS, its flag --num-blocks
                env = SHARED_ENV.get(field, env_prefix + "__".join(part.upper() for part in loc))
                where = f"{env} (or --{loc[-1].replace('_', '-')})"
            else:  # a rule across fields (a model validator)
                where = "settings"
            problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError(f"invalid {what} settings:\n  " + "\n  ".join(problems)) from None
