"""Prefect parameter forms derived from the stage config dataclasses.

Prefect builds a deployment's parameter schema from the flow signature with pydantic. A plain
dataclass gives each field a title and a type but no description, so `knob_parameter(Config)`
annotates the config type with the help text, default and choices of every `knob(...)`, read
from the field metadata: the knobs stay defined once, in `pipeline/`. The same annotation makes
Prefect (and the UI form, through the schema) reject a value outside a knob's choices.
"""
from __future__ import annotations

import dataclasses
import inspect

from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from pipeline.knobs import help_of


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


class KnobSchema:
    """Pydantic JSON-schema hook: adds every knob's help, default and choices to the form."""

    def __init__(self, config_cls: type, description: str = ""):
        self.config_cls = config_cls
        self.description = description

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        properties = target.get("properties", {})
        for field in dataclasses.fields(self.config_cls):
            prop = properties.get(field.name)
            if prop is None:
                continue
            help_text = help_of(field)
            if not field.metadata.get("in_key", True):
                help_text += " (Does not change the output: not in the artifact key.)"
            prop["description"] = help_text
            default = _default(field)
            if isinstance(default, tuple):
                default = list(default)
            prop["default"] = default
            if field.metadata.get("choices"):
                prop["enum"] = list(field.metadata["choices"])
        if self.description:
            target["description"] = self.description
        return schema


def _check_choices(config: Any) -> Any:
    for field in dataclasses.fields(config):
        choices = field.metadata.get("choices")
        if choices and getattr(config, field.name) not in choices:
            raise ValueError(f"{field.name} must be one of {', '.join(map(str, choices))}, "
                             f"not {getattr(config, field.name)!r}")
    return config


class Described:
    """Pydantic JSON-schema hook: the description of a plain flow parameter (crawl, store, until...)."""

    def __init__(self, description: str):
        self.description = description

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        schema["description"] = self.description
        return schema


# The help of the run-wide flow parameters, as every knob has its own (shown under each field).
RUN_PARAMETER_HELP = {
    "crawl": "WARC files or folders of them (.warc, .warc.gz); a folder means every WARC file under it.",
    "corpus": "The text to tokenize: a dedup artifact folder, or Parquet/JSONL files with a `text` column.",
    "tokens": "The token data: a tokenize artifact folder.",
    "inputs": "Input files, folders or artifact folders of this stage.",
    "against": "Earlier dedup artifact folders whose saved index the input is deduplicated against.",
    "tokenizer": "A train-tokenizer artifact folder (or tokenizer.json) used as is; empty: "
                 "the one the last incremental run used, else the newest in the store.",
    "store": "Artifact store root: each stage's output is <store>/<stage>/<key>/. Machines that share it share the cache.",
    "until": "Last stage to run; the stages after it are not run.",
    "workers": "Worker processes per stage, one input file each at a time (0: one per core).",
    "runner": "local: worker processes on the machine running the flow; dask: one Prefect task per input file "
              "on a Dask cluster (machines sharing the store).",
    "dask_address": "With runner=dask: the scheduler of an existing Dask cluster, tcp://host:8786 "
                    "(empty: a LocalCluster of 2 workers for this run).",
}


def run_parameter(name: str, annotation: Any, default: Any = inspect.Parameter.empty, *, choices=None,
                  help: str | None = None) -> inspect.Parameter:
    """A keyword flow parameter with its help text (RUN_PARAMETER_HELP unless given) and, with
    `choices`, a drop-down in the form whose values Prefect enforces."""
    if choices:
        annotation = Literal[tuple(choices)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, Described(help or RUN_PARAMETER_HELP[name])])


def knob_parameter(config_cls: type, description: str = "") -> Any:
    """The annotation of a flow parameter holding one stage's config."""
    return Annotated[config_cls, KnobSchema(config_cls, description), AfterValidator(_check_choices)]


def parameter_name(stage_name: str) -> str:
    """`train-tokenizer` → `train_tokenizer` (flow parameters are Python identifiers)."""
    return stage_name.replace("-", "_")


def stage_parameters(stages: list) -> list[inspect.Parameter]:
    """One keyword parameter per stage, named after it, defaulting to the stage's default config."""
    return [
        inspect.Parameter(parameter_name(stage.name), inspect.Parameter.KEYWORD_ONLY,
                          annotation=knob_parameter(stage.config_cls, f"{stage.name}: {stage.description}"),
                          default=stage.config_cls())
        for stage in stages
    ]


def with_signature(fn, name: str, parameters: list[inspect.Parameter], doc: str):
    """Give a `**kwargs` function an explicit signature (which Prefect reads for the form and to
    validate), and a module-level name so a served deployment can import it back."""
    fn.__signature__ = inspect.Signature(parameters, return_annotation=dict[str, str])
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    fn.__annotations__ = {p.name: p.annotation for p in parameters}
    return fn


