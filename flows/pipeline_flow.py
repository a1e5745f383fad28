"""The data pipeline as one Prefect flow: ingest → extract → langid → quality → dedup.

Every stage's knobs are flow parameters (its config dataclass), so the Prefect UI shows a form
per stage; a changed knob gives that stage a new artifact key, so it and the stages after it run
while everything upstream comes back Cached.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.tasks import stage_task_for
from pipeline.stages import DATA_STAGES
from pipeline.stages.dedup import DedupConfig
from pipeline.stages.extract import ExtractConfig
from pipeline.stages.ingest import IngestConfig
from pipeline.stages.langid import LangIdConfig
from pipeline.stages.quality import QualityConfig
from storage.store import default_root

SAMPLE_CRAWL = str(Path(__file__).resolve().parent.parent / "data" / "sample-crawl")


@flow(name="scratchlm-data", log_prints=True)
def data_pipeline(
    crawl: list[str] = [SAMPLE_CRAWL],  # noqa: B006 - Prefect parameters are copied per run
    store: str = str(default_root()),
    until: str = "dedup",
    workers: int = 0,
    ingest: IngestConfig = IngestConfig(),
    extract: ExtractConfig = ExtractConfig(),
    langid: LangIdConfig = LangIdConfig(),
    quality: QualityConfig = QualityConfig(),
    dedup: DedupConfig = DedupConfig(),
) -> dict[str, str]:
    """Run the data stages on a crawl (WARC files or folders) up to `until`; returns each stage's artifact folder."""
    if until not in DATA_STAGES:
        raise ValueError(f"until must be one of {', '.join(DATA_STAGES)}, not {until!r}")
    store = str(Path(store).resolve())
    configs = {"ingest": ingest, "extract": extract, "langid": langid, "quality": quality, "dedup": dedup}
    outputs: dict[str, str] = {}
    upstream = [str(Path(p).resolve()) for p in crawl]
    for name in DATA_STAGES[: DATA_STAGES.index(until) + 1]:
        path = stage_task_for(name, store)(name, upstream, configs[name], store, workers)
        outputs[name] = path
        upstream = [path]
    get_run_logger().info("artifacts: %s", outputs)
    return outputs
