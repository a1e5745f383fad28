"""Deriving CLI options from config dataclasses, so every knob is defined once (in pipeline/)."""
from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import typing
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.26 carries its own copy of click; its exceptions are that copy's
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on plain click
    from click import exceptions as click_exceptions

from pipeline.errors import ConfigError, StageError, as_config_error, build_checked, check_config
from pipeline.knobs import help_of


def option_name(knob: str) -> str:
    return "--" + knob.replace("_", "-")


def one_line(exc: BaseException) -> str:
    """A user's mistake as one line: a ConfigError names its option (--min-language-score: ...)."""
    message = exc.format_message() if isinstance(exc, click_exceptions.ClickException) else str(exc)
    if isinstance(exc, ConfigError) and exc.knob:
        message = f"{option_name(exc.knob)}: {message}"
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


class OneLineErrors(TyperGroup):
    """The top-level command group: whichever command a user's mistake comes from (a bad option,
    a missing or wrong input, a knob out of range), it is one `error:` line on stderr and exit
    status 2, never a usage block or a traceback. A traceback is left only for a bug in our code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click_exceptions.UsageError as exc:  # unknown option, value of the wrong kind, missing option
            _error(one_line(exc), 2)
        except click_exceptions.ClickException as exc:
            _error(one_line(exc), exc.exit_code or 2)
        except StageError as exc:
            _error(one_line(exc), 2)
        except typer.Abort:
            _error("aborted", 1)
        sys.exit(result if isinstance(result, int) else 0)


def _error(message: str, code: int):
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)


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
    """The config from option values, checked before any work starts: ConfigError naming the knob."""
    kwargs = {}
    for f in dataclasses.fields(config_cls):
        if f.name in values and values[f.name] is not None:
            kwargs[f.name] = values[f.name]
        choices = f.metadata.get("choices")
        if choices and f.name in kwargs and kwargs[f.name] not in choices:
            raise ConfigError(f.name, f"must be one of {', '.join(map(str, choices))}, not {kwargs[f.name]!r}")
    config = build_checked(config_cls, **kwargs)
    extra = EXTRA_CHECKS.get(config_cls.__name__)
    if extra is not None:
        extra(config)
    return config


EXTRA_CHECKS: dict = {}  # config class name → an extra check beyond its own check()


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
        try:
            updated[stage] = dataclasses.replace(config, **{field_name: _parse_value(raw, kind, item)})
        except (ValueError, StageError) as exc:  # a config that checks itself on construction
            raise typer.BadParameter(f"--set {item}: {as_config_error(type(config), exc)}") from None
    for stage in {item.split(".", 1)[0] for item in assignments}:  # checked before any stage starts
        try:
            check_config(updated[stage])
        except ConfigError as exc:
            where = f"{stage}.{exc.knob}" if exc.knob else stage
            raise typer.BadParameter(f"--set {where}: {exc}") from None
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


def check_crawl(paths) -> None:
    """The crawl given to `run` or `serve`, checked as ingest will see it (WARC files or folders)."""
    from pipeline.runner import input_files
    from pipeline.stages import get_stage

    input_files(get_stage("ingest"), [str(p) for p in paths])


def name_artifacts(message: str, inputs) -> str:
    """An error about an input that is an artifact folder says which stage made it, if it does not already."""
    from pipeline.documents import an, artifact_stage

    for item in inputs:
        made_by = artifact_stage(item)
        if made_by and str(item) in message and f"{made_by} artifact" not in message:
            message += f" ({Path(item).name} is {an(made_by)} artifact)"
    return message


def check_store(root) -> None:
    """The artifact store must be a folder this user can write (checked before any worker starts)."""
    from storage.store import default_root

    path = Path(root) if root is not None else default_root()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the folder it will be created in
    if not existing.is_dir():
        raise StageError(f"--store {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StageError(f"--store {path}: {existing} is not writable")
