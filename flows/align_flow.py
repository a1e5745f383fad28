"""`scratchlm-align`: a base model → a chat model, as a Prefect flow of cached stage tasks.

    model (pretrain artifact) ─▶ sft (--data: instruction data) ─▶ dpo (--data: preference pairs, optional)
                              └─▶ classify (--data: labelled texts, optional)

Each stage is the same task as everywhere else (flows/tasks.py: cached under its artifact key), so a
second run with the same model, data and knobs comes back Cached. A stage without data is skipped
with a log line (dpo, unless preference pairs are given); a stage not registered is skipped too.
Deployed by `scratchlm serve` as `scratchlm-align/model-to-chat` (group `align`), so it can run on
the GPU machine beside `scratchlm-model`. Tasks pass artifact folders, never data."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.forms import parameter_name, run_parameter, stage_parameters, with_signature
from flows.pipeline_flow import _common, _resolved, _stages, registered, run_one
from pipeline.stages import get_stage
from storage.store import default_root

ALIGN = ("sft", "dpo")  # in order; each reads the artifact of the one before it (sft reads `model`)
BRANCHES = ("classify",)  # each reads `model` itself (a classifier starts from the base model), when given data


def _align(**values) -> dict[str, str]:
    logger = get_run_logger()
    store = str(Path(values.get("store") or default_root()).resolve())
    current = base = _resolved(values["model"])
    outputs: dict[str, str] = {}
    for name in registered(ALIGN):
        config = values.get(parameter_name(name)) or get_stage(name).config_cls()
        if not getattr(config, "data", None):
            logger.info("%s: skipped, no data given (set %s.data)", name, name)
            continue
        outputs[name] = run_one(name, current, config, store, values.get("workers", 0))
        current = [outputs[name]]
    for name in registered(BRANCHES):
        config = values.get(parameter_name(name)) or get_stage(name).config_cls()
        if getattr(config, "data", None):
            outputs[name] = run_one(name, base, config, store, values.get("workers", 0))
    logger.info("artifacts: %s", outputs)
    return outputs


align_pipeline = flow(name="scratchlm-align", log_prints=True)(with_signature(
    _align, "align_pipeline",
    [run_parameter("model", list[str], help="The model to align: a pretrain (or sft) artifact folder, or a checkpoint "
                                            "folder.")] + _common(runner=False) + stage_parameters(_stages(ALIGN + BRANCHES)),
    "Instruction-tune a pretrained model (sft, with its `data`), then preference-tune it (dpo, when its `data` "
    "is given); a classifier of the same model when classify's `data` is given; returns each stage's artifact folder."))
