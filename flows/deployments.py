"""Deployments: what makes the pipeline show up in the Prefect UI, runnable with a form of knobs.

`scratchlm serve` registers the deployment with the server in PREFECT_API_URL and executes the runs
triggered from the UI (or on a schedule) in this process; stop it with Ctrl-C."""
from __future__ import annotations

from datetime import timedelta

from flows.pipeline_flow import SAMPLE_CRAWL, data_pipeline

DEPLOYMENT_NAME = "crawl-to-corpus"


def data_deployment(crawl: list[str] | None = None, store: str | None = None, every_hours: float = 0):
    parameters = {"crawl": crawl or [SAMPLE_CRAWL]}
    if store:
        parameters["store"] = store
    return data_pipeline.to_deployment(
        name=DEPLOYMENT_NAME,
        parameters=parameters,
        interval=timedelta(hours=every_hours) if every_hours else None,
        description="WARC crawl → deduplicated text corpus. Unchanged stages come back Cached.",
        tags=["scratchlm"],
    )


def serve(crawl: list[str] | None = None, store: str | None = None, every_hours: float = 0) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(data_deployment(crawl, store, every_hours))
