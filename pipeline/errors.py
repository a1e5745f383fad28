"""Errors a user can cause. They are printed as one line, never as a traceback."""
from __future__ import annotations

import dataclasses
import re
from typing import Any


class StageError(Exception):
    """The stage cannot run at all (input missing, nothing readable, bad option)."""


class ShardError(Exception):
    """One input file cannot be read as a whole (e.g. a Parquet file without a `text` column).

    The file is skipped and counted; the other files of the run are unaffected."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ConfigError(StageError, ValueError):
    """A knob has a value the stage cannot use. `knob` names the config field (None if unknown);
    the message says what is wrong, without the knob's name in front."""

    def __init__(self, knob: str | None, message: str):
        super().__init__(message)
        self.knob = knob


def check_config(config: Any) -> Any:
    """Run the config's own `check()` (if it has one) before any work starts; returns the config.

    A config dataclass may define `check()` raising ValueError (or StageError) with a one-line
    message; it becomes a ConfigError naming the knob (the first field named in the message)."""
    check = getattr(config, "check", None)
    if callable(check):
        try:
            check()
        except ConfigError:
            raise
        except (ValueError, StageError) as exc:
            raise as_config_error(type(config), exc) from None
    return config


def build_checked(config_cls: type, **values) -> Any:
    """`config_cls(**values)`, checked; a ValueError from construction becomes a ConfigError too."""
    try:
        config = config_cls(**values)
    except ConfigError:
        raise
    except (ValueError, StageError) as exc:
        raise as_config_error(config_cls, exc) from None
    return check_config(config)


def as_config_error(config_cls: type, exc: BaseException) -> ConfigError:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    names = [f.name for f in dataclasses.fields(config_cls)] if dataclasses.is_dataclass(config_cls) else []
    knob = knob_named_in(message, names)
    # "dedup: threshold must be ..." / "languages: unknown code" → the part after the names
    for prefix in filter(None, (_stage_prefix(message), knob)):
        if message.startswith(prefix + ": "):
            message = message[len(prefix) + 2:]
    if knob and message.startswith(knob + ": "):
        message = message[len(knob) + 2:]
    return ConfigError(knob, message)


def knob_named_in(message: str, names) -> str | None:
    """The config field a message is about: the earliest field name in it, as a whole word."""
    best = None
    for name in names:
        match = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", message)
        if match and (best is None or match.start() < best[0] or (match.start() == best[0] and len(name) > len(best[1]))):
            best = (match.start(), name)
    return best[1] if best else None


def _stage_prefix(message: str) -> str | None:
    head = message.split(": ", 1)[0]
    return head if ": " in message and re.fullmatch(r"[a-z][a-z0-9_-]*", head) else None


def check_range(config: Any, names, low: float | None = None, high: float | None = None) -> None:
    """Each named knob must be a number within [low, high] (either bound may be None); else ConfigError."""
    for name in ([names] if isinstance(names, str) else names):
        value = getattr(config, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # NaN != NaN
        ok = ok and (low is None or value >= low) and (high is None or value <= high)
        if not ok:
            if low is not None and high is not None:
                want = f"within [{low}, {high}]"
            else:
                want = f"at least {low}" if low is not None else f"at most {high}"
            raise ConfigError(name, f"{name} must be {want}, got {value!r}")
