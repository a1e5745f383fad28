"""The Prefect flow against a real (temporary, SQLite) Prefect server."""
import asyncio
import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq

from flows.pipeline_flow import data_pipeline
from pipeline.stages.quality import QualityConfig


def _states(flow_state):
    """Task run name → state name for one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def fetch():
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id])))
            return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}

    return asyncio.run(fetch())


def _table_artifact(key):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def fetch():
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            return found

    return asyncio.run(fetch())


def test_second_run_is_cached_and_a_changed_threshold_reruns_only_downstream(prefect_server, tmp_path, sample_warcs):
    store = str(tmp_path / "store")
    first = data_pipeline(crawl=[str(w) for w in sample_warcs], store=store, return_state=True)
    outputs = first.result()
    assert set(outputs) == {"ingest", "extract", "langid", "quality", "dedup"}
    assert set(_states(first).values()) == {"Completed"}
    kept = sum(pq.read_metadata(p).num_rows for p in (tmp_path / "store" / "dedup").glob("*/part-*.parquet"))
    assert kept > 0

    second = data_pipeline(crawl=[str(w) for w in sample_warcs], store=store, return_state=True)
    assert second.result() == outputs
    assert set(_states(second).values()) == {"Cached"}

    stricter = dataclasses.replace(QualityConfig(), gopher_min_words=120)
    third = data_pipeline(crawl=[str(w) for w in sample_warcs], store=store, quality=stricter, return_state=True)
    states = _states(third)
    assert states == {"ingest": "Cached", "extract": "Cached", "langid": "Cached",
                      "quality": "Completed", "dedup": "Completed"}
    assert third.result()["quality"] != outputs["quality"]

    artifacts = _table_artifact("quality-stats")
    assert artifacts, "each stage publishes a table artifact with its stats"
    quality_manifest = json.loads((Path(third.result()["quality"]) / "manifest.json").read_text())
    [artifact] = [a for a in artifacts if quality_manifest["key"] in (a.description or "")]
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    measures = {row["measure"]: row["value"] for row in rows}
    assert measures["documents in"] == quality_manifest["stats"]["docs_in"]
    assert measures["documents out"] == quality_manifest["stats"]["docs_out"]


def test_deployment_exposes_every_stage_knob_as_a_parameter(prefect_server):
    from prefect.client.orchestration import get_client

    from flows.deployments import data_deployment
    from pipeline.stages import get_stage

    deployment_id = data_deployment(every_hours=24).apply()

    async def fetch():
        async with get_client() as client:
            return await client.read_deployment(deployment_id)

    deployment = asyncio.run(fetch())
    schema = deployment.parameter_openapi_schema
    definitions = schema.get("definitions") or schema.get("$defs") or {}
    for stage_name in ("ingest", "extract", "langid", "quality", "dedup"):
        config_cls = get_stage(stage_name).config_cls
        ref = schema["properties"][stage_name]
        props = definitions[config_cls.__name__]["properties"] if "$ref" in str(ref) or "allOf" in ref else ref["properties"]
        assert set(props) == {f.name for f in dataclasses.fields(config_cls)}
    assert deployment.schedules and deployment.schedules[0].schedule.interval.total_seconds() == 24 * 3600


def test_a_stage_without_its_registration_or_its_input_is_skipped_with_a_log_line(prefect_server, tmp_path, caplog):
    from prefect import flow

    from flows.pipeline_flow import run_stages

    @flow(name="skip-check")
    def chain():
        # "no-such-stage" is not registered; tokenize has no tokenizer (train-tokenizer did not run).
        return run_stages(["no-such-stage", "tokenize"], [str(tmp_path)], {}, str(tmp_path / "store"))

    with caplog.at_level("INFO"):
        assert chain() == {}
    assert "no-such-stage: stage not registered yet, skipped" in caplog.text
    assert "tokenize: skipped, no train-tokenizer artifact to read (set tokenize.tokenizer)" in caplog.text
    assert not (tmp_path / "store").exists()
