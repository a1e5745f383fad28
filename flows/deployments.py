"""Deployments: what makes the pipeline show up in the Prefect UI, runnable with a form of knobs.

`scratchlm serve` registers these with the server in PREFECT_API_URL and executes the runs
triggered from the UI, the API (`prefect deployment run NAME -p key=value`) or a schedule in this
process; stop it with Ctrl-C:

- `scratchlm-pipeline/whole-pipeline`   crawl → corpus → tokens → model → scores, with the run report
- `scratchlm-data/crawl-to-corpus`      the data stages (ingest … dedup)
- `scratchlm-tokens/corpus-to-tokens`   train-tokenizer and tokenize
- `scratchlm-model/tokens-to-model`     pretrain and evaluate (serve `--only model` on the GPU machine)
- `scratchlm-align/model-to-chat`       sft, then dpo when preference data is given (flows/align_flow.py)
- `stage-NAME/NAME`                     each registered stage on its own inputs
- `retokenize-incremental/nightly`      cron schedule (nightly by default): new crawl files → tokens
- `crawl-watch/poll`                    every few minutes: runs retokenize-incremental as soon as the
                                        crawl folder changes, without waiting for the night
"""
from __future__ import annotations

from datetime import timedelta

from prefect.types.entrypoint import EntrypointType

from flows import pipeline_flow as pf

DEPLOYMENT_NAME = "crawl-to-corpus"
NIGHTLY = "0 3 * * *"
GROUPS = ("pipeline", "data", "tokens", "model", "align", "stages", "incremental")


def _deploy(flow, name: str, description: str, parameters: dict | None = None, **schedule):
    return flow.to_deployment(name=name, parameters=parameters or {}, description=description, tags=["scratchlm"],
                              entrypoint_type=EntrypointType.MODULE_PATH, **schedule)


def _base(crawl: list[str] | None, store: str | None) -> dict:
    parameters = {"crawl": crawl or [pf.SAMPLE_CRAWL]}
    if store:
        parameters["store"] = store
    return parameters


def data_deployment(crawl: list[str] | None = None, store: str | None = None, every_hours: float = 0):
    return _deploy(pf.data_pipeline, DEPLOYMENT_NAME, "WARC crawl → deduplicated text corpus. Unchanged stages come back Cached.",
                   _base(crawl, store), interval=timedelta(hours=every_hours) if every_hours else None)


def incremental_deployment(crawl: list[str] | None = None, store: str | None = None, cron: str = NIGHTLY,
                           tokenizer: str = ""):
    parameters = _base(crawl, store)
    if tokenizer:
        parameters["tokenizer"] = tokenizer
    return _deploy(pf.retokenize_incremental, "nightly",
                   "New crawl files → data stages (only new shards compute) → tokens with a fixed tokenizer; "
                   "the result names the token dataset pretraining should read next.", parameters, cron=cron)


def watch_deployment(crawl: list[str] | None = None, store: str | None = None, poll_minutes: float = 5,
                     tokenizer: str = ""):
    parameters = _base(crawl, store)
    if tokenizer:
        parameters["tokenizer"] = tokenizer
    return _deploy(pf.watch_crawl, "poll", "Looks at the crawl folder every few minutes; on new or changed files it "
                   "runs retokenize-incremental at once.", parameters, interval=timedelta(minutes=poll_minutes))


def deployments(crawl: list[str] | None = None, store: str | None = None, every_hours: float = 0,
                cron: str = NIGHTLY, tokenizer: str = "", poll_minutes: float = 5, only: tuple[str, ...] = GROUPS) -> list:
    store_only = {"store": store} if store else {}
    found = []
    if "pipeline" in only:
        found.append(_deploy(pf.scratchlm_pipeline, "whole-pipeline", "Crawl → corpus → tokens → model → scores, "
                             "ending with the run report.", _base(crawl, store)))
    if "data" in only:
        found.append(data_deployment(crawl, store, every_hours))
    if "tokens" in only:
        found.append(_deploy(pf.tokens_pipeline, "corpus-to-tokens", "Train a tokenizer and tokenize a corpus.", store_only))
    if "model" in only:
        found.append(_deploy(pf.model_pipeline, "tokens-to-model", "Pretrain and evaluate on a token artifact "
                             "(serve this one on the GPU machine).", store_only))
    if "align" in only:
        from flows.align_flow import align_pipeline

        found.append(_deploy(align_pipeline, "model-to-chat", "Instruction-tune (sft) and preference-tune (dpo) a "
                             "pretrained model; serve with --only align on the GPU machine.", store_only))
    if "stages" in only:
        for name, stage_flow in pf.STAGE_FLOWS.items():
            found.append(_deploy(stage_flow, name, stage_flow.fn.__doc__, store_only))
    if "incremental" in only:
        found.append(incremental_deployment(crawl, store, cron, tokenizer))
        if poll_minutes:
            found.append(watch_deployment(crawl, store, poll_minutes, tokenizer))
    return found


def serve(crawl: list[str] | None = None, store: str | None = None, every_hours: float = 0, cron: str = NIGHTLY,
          tokenizer: str = "", poll_minutes: float = 5, only: tuple[str, ...] = GROUPS) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(crawl, store, every_hours, cron, tokenizer, poll_minutes, only))
