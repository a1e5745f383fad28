"""Each stage as a Prefect task whose cache key is the stage's artifact key.

Prefect's default cache policy includes the flow run id, so it never reuses across runs; keying on
our content key instead makes a second run show every unchanged stage as Cached, and a changed
knob re-run exactly the stages downstream of it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.locking.filesystem import FileSystemLockManager

from pipeline.runner import RunOptions, plan, run_stage
from pipeline.stages import get_stage
from storage.store import ArtifactStore


def prefect_cache_key(stage_name: str, inputs: list[str], config: Any, store_root: str, against: list[str]) -> str:
    _, _, key = plan(get_stage(stage_name), inputs, config, against=against)
    store = ArtifactStore(store_root)
    cache_key = f"{stage_name}-{key}"
    if not store.exists(stage_name, key):
        # The artifact was deleted by hand: forget Prefect's record of it so the task runs again
        # instead of returning a path that no longer exists.
        (results_folder(store_root) / cache_key).unlink(missing_ok=True)
    return cache_key


def results_folder(store_root: str) -> Path:
    return Path(store_root).resolve() / ".prefect" / "results"


def _key_from_parameters(context, parameters: dict) -> str:
    return prefect_cache_key(parameters["stage_name"], parameters["inputs"], parameters["config"],
                             parameters["store_root"], parameters.get("against") or [])


@task(name="stage", persist_result=True, log_prints=True)
def stage_task(stage_name: str, inputs: list[str], config: Any, store_root: str, workers: int = 0,
               against: list[str] | None = None) -> str:
    stage = get_stage(stage_name)
    options = RunOptions(workers=workers or RunOptions().workers, progress=False)
    result = run_stage(stage, inputs, config, ArtifactStore(store_root), options, against=against or [])
    publish_stats(stage_name, result.manifest)
    return str(result.path)


def stage_task_for(stage_name: str, store_root: str):
    """The stage task configured for one store: results and locks live beside the artifacts."""
    root = Path(store_root).resolve()
    policy = CacheKeyFnPolicy(cache_key_fn=_key_from_parameters).configure(
        isolation_level="SERIALIZABLE",
        lock_manager=FileSystemLockManager(lock_files_directory=root / ".prefect" / "locks"),
    )
    return stage_task.with_options(
        name=stage_name,
        cache_policy=policy,
        result_storage=results_folder(store_root),
    )


def publish_stats(stage_name: str, manifest: dict) -> None:
    """A Prefect table artifact: the stage's funnel, one row per count."""
    stats = manifest["stats"]
    rows = [
        {"measure": "documents in", "value": stats["docs_in"]},
        {"measure": "documents out", "value": stats["docs_out"]},
        {"measure": "bytes in", "value": stats["bytes_in"]},
        {"measure": "bytes out", "value": stats["bytes_out"]},
    ]
    for group in ("dropped", "faults", "skipped"):
        rows += [{"measure": f"{group}: {reason}", "value": n} for reason, n in stats.get(group, {}).items()]
    if "shards" in stats:
        rows.append({"measure": "shards reused", "value": stats["shards"]["reused"]})
        rows.append({"measure": "shards computed", "value": stats["shards"]["computed"]})
    rows.append({"measure": "artifact", "value": manifest["key"]})
    create_table_artifact(
        key=re.sub(r"[^a-z0-9-]", "-", f"{stage_name}-stats"),
        table=rows,
        description=f"{stage_name}: funnel of artifact {manifest['key']}",
    )
