"""Deriving CLI options from config dataclasses, so every knob is defined once (in pipeline/)."""
from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Optional

import typer

from pipeline.knobs import help_of


def dataclass_parameters(config_cls: type, panel: str) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(config_cls)
    params = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        annotation = hints[f.name]
        if typing.get_origin(annotation) in (list, tuple):
            annotation = Optional[list[typing.get_args(annotation)[0]]]
            default = None if not default else list(default)
        help_text = help_of(f)
        choices = f.metadata.get("choices")
        if choices:
            help_text += f" One of: {', '.join(map(str, choices))}."
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
            default=typer.Option(default, help=help_text, rich_help_panel=panel, show_default=True),
        ))
    return params


def build_config(config_cls: type, values: dict[str, Any]):
    kwargs = {}
    for f in dataclasses.fields(config_cls):
        if f.name in values and values[f.name] is not None:
            kwargs[f.name] = values[f.name]
        choices = f.metadata.get("choices")
        if choices and f.name in kwargs and kwargs[f.name] not in choices:
            raise typer.BadParameter(f"--{f.name.replace('_', '-')} must be one of {', '.join(map(str, choices))}")
    return config_cls(**kwargs)


def parse_assignments(assignments: list[str], configs: dict[str, Any]) -> dict[str, Any]:
    """`stage.field=value` strings → updated config dataclasses (values parsed by the field's type)."""
    updated = dict(configs)
    for item in assignments:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise typer.BadParameter(f"--set {item!r}: expected STAGE.FIELD=VALUE, e.g. langid.min_language_score=0.5")
        name, raw = item.split("=", 1)
        stage, field_name = name.split(".", 1)
        if stage not in updated:
            raise typer.BadParameter(f"--set {item!r}: unknown stage {stage!r} (stages: {', '.join(updated)})")
        config = updated[stage]
        fields = {f.name: f for f in dataclasses.fields(config)}
        if field_name not in fields:
            raise typer.BadParameter(f"--set {item!r}: {stage} has no knob {field_name!r} (knobs: {', '.join(fields)})")
        kind = typing.get_type_hints(type(config))[field_name]
        updated[stage] = dataclasses.replace(config, **{field_name: _parse_value(raw, kind, item)})
    return updated


def _parse_value(raw: str, kind, item: str):
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind in (int, float, str):
            return kind(raw)
        if typing.get_origin(kind) in (list, tuple):
            inner = typing.get_args(kind)[0]
            return [inner(v) for v in raw.split(",") if v]
    except ValueError:
        raise typer.BadParameter(f"--set {item!r}: {raw!r} is not a valid {getattr(kind, '__name__', kind)}") from None
    return raw
