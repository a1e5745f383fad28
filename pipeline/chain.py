"""The stages in a row, without Prefect: the call a schedule makes when new crawl files land.

`update_tokens(crawl, tokenizer)` runs ingest → extract → langid → quality → dedup → tokenize over
everything under `crawl`. Every stage caches per input file (dedup per prefix of files), so files
already seen come back from the store and only the new ones are read, deduplicated against what
was kept before, and tokenized; the token parts of the old files are the same files as before.
The tokenizer is fixed (a new tokenizer is a deliberate full run: every token shard's key changes).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from pipeline.errors import check_config
from pipeline.runner import RunOptions, StageResult, run_stage
from pipeline.stages import DATA_STAGES, get_stage
from storage.store import ArtifactStore

TOKEN_CHAIN = DATA_STAGES + ("tokenize",)


def update_tokens(crawl: Sequence[str | Path], tokenizer: str | Path, store: ArtifactStore | None = None,
                  configs: dict[str, Any] | None = None, options: RunOptions | None = None,
                  on_stage=None) -> dict[str, StageResult]:
    """Run the chain up to `tokenize`; returns each stage's result (`["tokenize"].path` is the token
    dataset pretraining should read next). `on_stage(name, result)` is called after each stage."""
    configs = dict(configs or {})
    configs["tokenize"] = dataclasses.replace(configs.get("tokenize") or get_stage("tokenize").config_cls(),
                                              tokenizer=str(tokenizer))
    return run_chain(crawl, TOKEN_CHAIN, store, configs, options, on_stage)


def run_chain(inputs: Sequence[str | Path], stages: Sequence[str], store: ArtifactStore | None = None,
              configs: dict[str, Any] | None = None, options: RunOptions | None = None,
              on_stage=None) -> dict[str, StageResult]:
    store = store or ArtifactStore()
    configs = {name: check_config((configs or {}).get(name) or get_stage(name).config_cls()) for name in stages}
    check_config(options or RunOptions())  # all knobs before the first stage: no failure an hour in
    results: dict[str, StageResult] = {}
    upstream = [str(p) for p in inputs]
    for name in stages:
        stage = get_stage(name)
        config = configs.get(name) or stage.config_cls()
        result = run_stage(stage, upstream, config, store, options)
        results[name] = result
        if on_stage is not None:
            on_stage(name, result)
        upstream = [str(result.path)]
    return results


def shard_counts(result: StageResult) -> tuple[int, int]:
    """(computed, reused) input shards of a stage run; a cached artifact computed nothing."""
    shards = result.manifest["stats"].get("shards", {})
    if result.cached:
        return 0, shards.get("total", 0)
    return shards.get("computed", 0), shards.get("reused", 0)
