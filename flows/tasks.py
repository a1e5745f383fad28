"""Each stage as a Prefect task whose cache key is the stage's artifact key.

Prefect's default cache policy includes the flow run id, so it never reuses across runs; keying on
our content key instead (`pipeline.runner.plan`: stage, code version, knobs, input digests and the
digests of referenced artifacts such as a tokenizer) makes a second run show every unchanged stage
as Cached, and a changed knob re-run exactly the stages downstream of it. Tasks pass artifact
folders (paths), never data.

For scale-out, a shard stage can also run as one task per input file (`shard_task`, e.g. on a Dask
cluster) followed by `stage_task`, which then finds every shard cached and only assembles.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.locking.filesystem import FileSystemLockManager

from pipeline import runner
from pipeline.runner import RunOptions, plan, run_stage, stage_key
from pipeline.stages import get_stage
from storage.keys import file_digest
from storage.store import ArtifactStore

FLOW_OPTIONS = RunOptions(progress=False)  # keep_rejects as the CLI's default, so keys agree


def prefect_cache_key(stage_name: str, inputs: list[str], config: Any, store_root: str, against: list[str]) -> str:
    _, _, key = plan(get_stage(stage_name), inputs, config, FLOW_OPTIONS, against=against)
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


def _options(workers: int) -> RunOptions:
    return RunOptions(workers=workers or RunOptions().workers, keep_rejects=FLOW_OPTIONS.keep_rejects, progress=False)


@task(name="stage", persist_result=True, log_prints=True)
def stage_task(stage_name: str, inputs: list[str], config: Any, store_root: str, workers: int = 0,
               against: list[str] | None = None) -> str:
    stage = get_stage(stage_name)
    result = run_stage(stage, inputs, config, ArtifactStore(store_root), _options(workers), against=against or [])
    publish_stats(stage_name, result.manifest, result.path)
    return str(result.path)


def _policy(root: Path, key_fn):
    return CacheKeyFnPolicy(cache_key_fn=key_fn).configure(
        isolation_level="SERIALIZABLE",
        lock_manager=FileSystemLockManager(lock_files_directory=root / ".prefect" / "locks"),
    )


def stage_task_for(stage_name: str, store_root: str):
    """The stage task configured for one store: results and locks live beside the artifacts."""
    root = Path(store_root).resolve()
    return stage_task.with_options(name=stage_name, cache_policy=_policy(root, _key_from_parameters),
                                   result_storage=results_folder(store_root))


# ---------------------------------------------------------------------------- one task per shard

def shard_folder(stage_name: str, file: str, config: Any, store_root: str) -> Path:
    stage = get_stage(stage_name)
    return ArtifactStore(store_root).shard_path(stage.name, stage_key(stage, config, file_digest(Path(file)), FLOW_OPTIONS))


def _shard_cache_key(context, parameters: dict) -> str:
    folder = shard_folder(parameters["stage_name"], parameters["file"], parameters["config"], parameters["store_root"])
    cache_key = f"{parameters['stage_name']}-shard-{folder.name}"
    if not (folder / runner.SHARD_MANIFEST).is_file():
        (results_folder(parameters["store_root"]) / cache_key).unlink(missing_ok=True)
    return cache_key


@task(name="shard", persist_result=True)
def shard_task(stage_name: str, file: str, config: Any, store_root: str) -> str:
    """Compute one input file's shard of a shard stage (the runner's watched worker process, so a
    document that hangs or crashes is dropped as in a local run)."""
    stage = get_stage(stage_name)
    folder = shard_folder(stage_name, file, config, store_root)
    return str(runner.run_one_shard(stage, config, Path(file), folder, _options(1)))


def shard_task_for(stage_name: str, store_root: str):
    root = Path(store_root).resolve()
    return shard_task.with_options(name=f"{stage_name}-shard", cache_policy=_policy(root, _shard_cache_key),
                                   result_storage=results_folder(store_root))


def stage_input_files(stage_name: str, inputs: list[str]) -> list[str]:
    return [str(f) for f in runner.input_files(get_stage(stage_name), inputs)]


# ----------------------------------------------------------------------------------- publishing

def _artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower())


def publish_stats(stage_name: str, manifest: dict, folder: Path | None = None) -> None:
    """A Prefect table artifact (the stage's funnel, one row per count) and a link to its folder."""
    stats = manifest["stats"]
    rows = [
        {"measure": "documents in", "value": stats.get("docs_in", 0)},
        {"measure": "documents out", "value": stats.get("docs_out", 0)},
        {"measure": "bytes in", "value": stats.get("bytes_in", 0)},
        {"measure": "bytes out", "value": stats.get("bytes_out", 0)},
    ]
    for group in ("dropped", "faults", "skipped", "extra"):
        rows += [{"measure": f"{group}: {reason}", "value": n} for reason, n in (stats.get(group) or {}).items()]
    if "shards" in stats:
        rows.append({"measure": "shards reused", "value": stats["shards"]["reused"]})
        rows.append({"measure": "shards computed", "value": stats["shards"]["computed"]})
    for name, value in stats.items():  # extra measures of model stages (tokens, loss, scores)
        if name not in ("docs_in", "docs_out", "bytes_in", "bytes_out", "dropped", "faults", "skipped", "extra",
                        "shards", "fault_messages") and isinstance(value, (int, float, str)):
            rows.append({"measure": name, "value": value})
    rows.append({"measure": "artifact", "value": manifest["key"]})
    create_table_artifact(
        key=_artifact_key(f"{stage_name}-stats"),
        table=rows,
        description=f"{stage_name}: funnel of artifact {manifest['key']}",
    )
    if folder is not None:
        create_link_artifact(
            key=_artifact_key(f"{stage_name}-folder"),
            link=Path(folder).resolve().as_uri(),
            link_text=str(Path(folder).resolve()),
            description=f"{stage_name}: artifact folder of {manifest['key']}",
        )
