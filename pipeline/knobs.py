"""Stage knobs are defined once, as dataclass fields with help text; the CLI options and the
Prefect flow parameters are both derived from these dataclasses."""
from __future__ import annotations

import dataclasses
from typing import Any


def knob(default: Any, help: str, *, choices: tuple | None = None, in_key: bool = True) -> Any:
    """A config field. `in_key=False` marks knobs that cannot change the output (e.g. workers)."""
    meta = {"help": help, "in_key": in_key}
    if choices:
        meta["choices"] = choices
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def key_fields(config: Any) -> dict:
    """The knobs that name the output: everything except fields marked in_key=False."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.metadata.get("in_key", True)
    }


def help_of(field: dataclasses.Field) -> str:
    return field.metadata.get("help", "")
