"""`--runner dask`: shard stages as one Prefect task per input file on a local Dask cluster of two
workers (loopback). Every shard is computed once, and the artifacts are the local runner's, byte
for byte."""
import asyncio
import json
from collections import Counter
from pathlib import Path

import dask
import pytest
from distributed import LocalCluster

from flows.pipeline_flow import data_pipeline

STAGES = ("ingest", "extract", "langid")


@pytest.fixture(scope="module")
def cluster():
    # Shard tasks start the runner's watched worker process, which a daemonic worker may not do.
    with dask.config.set({"distributed.worker.daemon": False}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as local:
            yield local


def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def fetch():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return asyncio.run(fetch())


def _parts(folder: str) -> tuple:
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    return manifest["key"], [(o["file"], o["rows"], o["sha256"]) for o in manifest["outputs"]]


def test_dask_runner_computes_each_shard_once_and_matches_the_local_runner(prefect_server, cluster, tmp_path, sample_warcs):
    crawl = [str(w) for w in sample_warcs[:2]]
    state = data_pipeline(crawl=crawl, store=str(tmp_path / "dask"), until="langid", workers=1, runner="dask",
                          dask_address=cluster.scheduler_address, return_state=True)
    on_dask = state.result()
    runs = _task_runs(state.state_details.flow_run_id)
    shard_runs = Counter(r.name.rsplit("-", 1)[0] for r in runs if "-shard-" in r.name)
    assert shard_runs == {f"{stage}-shard": 2 for stage in STAGES}
    assert {r.state.name for r in runs} == {"Completed"}
    for stage in STAGES:
        shard_dirs = [p for p in (tmp_path / "dask" / stage / "_shards").iterdir() if not p.name.startswith(".")]
        assert len(shard_dirs) == 2, stage
        # The assembling task found every shard already computed by the shard tasks.
        shards = json.loads((Path(on_dask[stage]) / "manifest.json").read_text())["stats"]["shards"]
        assert shards == {"total": 2, "computed": 0, "reused": 2}, (stage, shards)

    local = data_pipeline(crawl=crawl, store=str(tmp_path / "local"), until="langid", workers=1)
    for stage in STAGES:
        assert _parts(on_dask[stage]) == _parts(local[stage]), stage

    # A second run on the cluster: every shard task and stage task comes back Cached.
    again = data_pipeline(crawl=crawl, store=str(tmp_path / "dask"), until="langid", workers=1, runner="dask",
                          dask_address=cluster.scheduler_address, return_state=True)
    assert again.result() == on_dask
    assert {r.state.name for r in _task_runs(again.state_details.flow_run_id)} == {"Cached"}
