"""Orchestration figures: Prefect overhead vs calling the stages directly, the cached re-run, and
the Dask runner (LocalCluster, 2 workers) vs the local runner.

    .venv/bin/python benchmarks/bench_flow.py [--crawl data/sample-crawl] [--until dedup] [--workers 2]

Each measurement uses a fresh store in a temporary folder, after one warm-up run of each kind;
direct and flow runs are interleaved. The Prefect server is Prefect's temporary local one (its
start is reported separately). The Dask runs use a LocalCluster of 2 single-threaded worker
processes, each shard one task (workers=1 inside it); the local runner uses `--workers`
processes. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")


def direct(crawl: list[str], store: Path, until: str, workers: int) -> float:
    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages import DATA_STAGES, get_stage
    from storage.store import ArtifactStore

    started = time.perf_counter()
    inputs = crawl
    for name in DATA_STAGES[: DATA_STAGES.index(until) + 1]:
        result = run_stage(get_stage(name), inputs, None, ArtifactStore(store), RunOptions(workers=workers, progress=False))
        inputs = [str(result.path)]
    return time.perf_counter() - started


def flow_run(crawl: list[str], store: Path, until: str, workers: int, **kwargs) -> float:
    from flows.pipeline_flow import data_pipeline

    started = time.perf_counter()
    data_pipeline(crawl=crawl, store=str(store), until=until, workers=workers, **kwargs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crawl", default=str(Path(__file__).resolve().parent.parent / "data" / "sample-crawl"))
    parser.add_argument("--until", default="dedup")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    crawl = [str(Path(args.crawl).resolve())]
    tmp = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    figures: dict = {"crawl": args.crawl, "until": args.until, "workers": args.workers,
                     "load_average_at_start": os.getloadavg()[0]}

    from statistics import median

    from prefect.testing.utilities import prefect_test_harness

    direct(crawl, tmp / "warm-up", args.until, args.workers)  # imports, page cache, model files
    started = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        figures["server_start_s"] = round(time.perf_counter() - started, 2)
        flow_run(crawl, tmp / "warm-up-flow", args.until, args.workers)
        direct_s, flow_s, cached_s, dask_s = [], [], [], []
        for i in range(args.rounds):  # interleaved, so a change in the machine's load hits both
            direct_s.append(direct(crawl, tmp / f"direct-{i}", args.until, args.workers))
            flow_s.append(flow_run(crawl, tmp / f"flow-{i}", args.until, args.workers))
            cached_s.append(flow_run(crawl, tmp / f"flow-{i}", args.until, args.workers))
        figures["direct_s"] = [round(x, 2) for x in direct_s]
        figures["flow_first_run_s"] = [round(x, 2) for x in flow_s]
        figures["flow_cached_rerun_s"] = [round(x, 2) for x in cached_s]
        figures["prefect_overhead_pct_of_medians"] = round(100 * (median(flow_s) / median(direct_s) - 1), 1)
        if not args.no_dask:
            import dask
            from distributed import LocalCluster

            with dask.config.set({"distributed.worker.daemon": False}):
                started = time.perf_counter()
                with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
                    figures["dask_cluster_start_s"] = round(time.perf_counter() - started, 2)
                    for i in range(args.rounds):
                        dask_s.append(flow_run(crawl, tmp / f"dask-{i}", args.until, 1, runner="dask",
                                               dask_address=cluster.scheduler_address))
            figures["dask_2_workers_s"] = [round(x, 2) for x in dask_s]
            figures["dask_vs_local_runner"] = round(median(dask_s) / median(flow_s), 2)
    figures["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
