"""The registry of stages, in pipeline order."""
from __future__ import annotations

import importlib

STAGE_MODULES = {
    "ingest": "pipeline.stages.ingest",
    "extract": "pipeline.stages.extract",
    "langid": "pipeline.stages.langid",
    "quality": "pipeline.stages.quality",
    "dedup": "pipeline.stages.dedup",
    "train-tokenizer": "pipeline.stages.train_tokenizer",
    "tokenize": "pipeline.stages.tokenize",
    "pretrain": "pipeline.stages.pretrain",
    "evaluate": "pipeline.stages.evaluate",
    "sft": "pipeline.stages.sft",
    "classify": "pipeline.stages.classify",
    "dpo": "pipeline.stages.dpo",
}


DATA_STAGES = ("ingest", "extract", "langid", "quality", "dedup")  # the order the data flow runs them in


def get_stage(name: str):
    if name not in STAGE_MODULES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_MODULES)}")
    return importlib.import_module(STAGE_MODULES[name]).STAGE


def all_stages():
    return [get_stage(name) for name in STAGE_MODULES]
