"""Running a stage: caching by content key, one watched worker process per shard, manifests.

Each input file is a shard with its own key (stage, code version, config, file digest), cached
under `<store>/<stage>/_shards/<key>/`. The stage's artifact `<store>/<stage>/<key>/` hard-links
the shard files as `part-NNNNN.parquet` and carries the manifest. Adding one file to an input
folder therefore computes one shard and reuses the others.

Workers are separate processes watched by this one: a document that takes longer than
`doc_timeout` seconds, or that crashes the process (a segfault in a C parser), is dropped with a
reason and the shard is redone without it, so no input can stall or kill a run.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.documents import expand_inputs, has_suffix, nothing_readable, parquet_rows
from pipeline.errors import ConfigError, ShardError, StageError, check_config, check_range
from pipeline.knobs import key_fields, knob
from pipeline.stage import GlobalStage, ShardContext, ShardStage
from storage.keys import content_key, file_digest
from storage.store import ArtifactStore, AtomicDir, describe_file

SHARD_MANIFEST = "shard.json"
MAX_RESTARTS_PER_SHARD = 25
PARQUET_OPTIONS = dict(compression="zstd", use_dictionary=True, write_statistics=True)
# Columns unique per row gain nothing from dictionary encoding and cost a hash per value.
UNIQUE_COLUMNS = frozenset({"id", "url", "source", "html", "text", "warc_date"})


def _parquet_options(schema: pa.Schema) -> dict:
    return dict(PARQUET_OPTIONS, use_dictionary=[f.name for f in schema if f.name not in UNIQUE_COLUMNS])


@dataclass
class RunOptions:
    workers: int = knob(max(1, os.cpu_count() or 1), "Worker processes (one input file each at a time).", in_key=False)
    keep_rejects: int = knob(0, "Write up to N dropped documents per drop reason to rejects.parquet for inspection.")
    doc_timeout: float = knob(30.0, "Seconds one document may take before it is dropped (reason doc_timeout).", in_key=False)
    progress: bool = knob(True, "Show a progress bar on stderr.", in_key=False)

    def check(self) -> None:
        check_range(self, "workers", low=1)
        check_range(self, "keep_rejects", low=0)
        if not self.doc_timeout > 0:
            raise ConfigError("doc_timeout", f"doc_timeout must be above 0 seconds, got {self.doc_timeout!r}")


@dataclass(frozen=True)
class CopyOf:
    """A side file to copy into the artifact, as opposed to a scratch file moved there."""
    path: Path


@dataclass
class StageResult:
    path: Path
    key: str
    cached: bool
    manifest: dict


def code_version(stage_version: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("scratchlm")
    except PackageNotFoundError:
        package = "dev"
    return f"scratchlm-{package}/stage-{stage_version}"


def stage_key(stage, config: Any, digests: Sequence[str] | str, options: RunOptions) -> str:
    """The key of a whole run (a list of digests) or of one shard (one digest)."""
    parts = [stage.name, stage.version, key_fields(config), options.keep_rejects,
             digests if isinstance(digests, str) else list(digests)]
    references = reference_digests(stage, config)
    if references:  # appended only when present, so the keys of stages without any stay as they were
        parts.append({"references": references})
    return content_key(*parts)


def reference_digests(stage, config: Any) -> list[str]:
    """Digests of the other artifacts' files a stage reads (its tokenizer, a checkpoint)."""
    return [file_digest(p) for p in stage.references(config)]


def input_files(stage, inputs: Sequence[str | os.PathLike]) -> list[Path]:
    if stage.input_files is not None:
        return stage.input_files(inputs)
    return expand_inputs(inputs, stage.input_suffixes)


def plan(stage, inputs: Sequence[str | os.PathLike], config: Any, options: RunOptions | None = None,
         against: Sequence[str | os.PathLike] = ()):
    """The input files, their digests and the artifact key: enough to know whether it is cached."""
    options = check_config(options or RunOptions())
    check_config(config)  # every knob, before any file is read: a bad value is one line, not a worker's traceback
    files = input_files(stage, inputs)
    digests = [file_digest(f) for f in files]
    key = stage_key(stage, config, digests, options)
    if against:
        if stage.resolve_against is None:
            raise StageError(f"{stage.name}: takes no --against")
        against_digests = [file_digest(f) for f in stage.resolve_against(against)]
        key = content_key(key, "against", against_digests)
    return files, digests, key


def run_stage(stage, inputs: Sequence[str | os.PathLike], config: Any = None, store: ArtifactStore | None = None,
              options: RunOptions | None = None, against: Sequence[str | os.PathLike] = ()) -> StageResult:
    store = store or ArtifactStore()
    options = options or RunOptions()
    config = config if config is not None else stage.config_cls()
    files, digests, key = plan(stage, inputs, config, options, against)
    if store.exists(stage.name, key):
        return StageResult(store.path(stage.name, key), key, True, store.manifest(stage.name, key))
    started = _now()
    if isinstance(stage, GlobalStage):
        outputs, stats, side = _run_global(stage, files, digests, config, store, options, key, against)
    else:
        outputs, stats, side = _run_shards(stage, files, digests, config, store, options)
    manifest = {
        "stage": stage.name,
        "key": key,
        "code_version": code_version(stage.version),
        "config": dataclasses.asdict(config),
        "run_options": {"keep_rejects": options.keep_rejects},
        "inputs": [{"path": str(f), "digest": d} for f, d in zip(files, digests)],
        "against": [str(a) for a in against],
        "started": started,
    }
    with store.open(stage.name, key) as out:
        described = _materialise(out, outputs, side)
        manifest.update(described)
        manifest["stats"] = stats
        manifest["finished"] = _now()
        if isinstance(stage, ShardStage) and _write_report(stage, config, out):
            manifest["side_outputs"].append(describe_file(out.path("report.png")))
        path = out.commit(manifest)
    if isinstance(stage, GlobalStage):
        shutil.rmtree(_scratch_dir(store, stage, key), ignore_errors=True)
    return StageResult(path, key, False, manifest)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------- shard stages

def _run_shards(stage: ShardStage, files, digests, config, store: ArtifactStore, options: RunOptions):
    shard_dirs = [store.shard_path(stage.name, stage_key(stage, config, d, options)) for d in digests]
    todo = [i for i, d in enumerate(shard_dirs) if not (d / SHARD_MANIFEST).is_file()]
    if todo:
        _ShardPool(stage, config, options, files, shard_dirs, todo).run()
    shards = [_load_json(d / SHARD_MANIFEST) for d in shard_dirs]
    messages = [m for s in shards for m in s.get("fault_messages", [])]
    if not any(s["stats"]["docs_in"] for s in shards) and messages:
        raise nothing_readable(messages, len(files))
    stats = sum_stats([s["stats"] for s in shards])
    stats["fault_messages"] = messages[:100]
    stats["shards"] = {"total": len(shards), "computed": len(todo), "reused": len(shards) - len(todo)}
    if stage.summarize is not None:
        stats.update(stage.summarize(stats))
    outputs = [(shard_dirs[i] / "data.parquet", f"part-{i:05d}.parquet", shards[i]["rows"]) for i in range(len(shards))]
    side = {}
    rejects = [d / "rejects.parquet" for d in shard_dirs if (d / "rejects.parquet").exists()]
    if rejects:
        side["rejects.parquet"] = pa.concat_tables([pq.read_table(p) for p in rejects])
    if stage.side_files is not None:
        side.update({name: CopyOf(path) for name, path in stage.side_files(config).items()})
    signal_files = [d / "signals.parquet" for d in shard_dirs if (d / "signals.parquet").exists()]
    if signal_files:
        side["signals.parquet"] = pa.concat_tables([pq.read_table(p) for p in signal_files], promote_options="default")
    return outputs, stats, side


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def sum_stats(all_stats: list[dict]) -> dict:
    """The funnel of several shards: counts added, reasons merged."""
    total: dict = {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0,
                   "dropped": {}, "faults": {}, "skipped": {}, "extra": {}}
    for s in all_stats:
        for k in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
            total[k] += s[k]
        for group in ("dropped", "faults", "skipped", "extra"):
            for reason, n in s.get(group, {}).items():
                total[group][reason] = total[group].get(reason, 0) + n
    for group in ("dropped", "faults", "skipped", "extra"):
        total[group] = dict(sorted(total[group].items()))
    return total


def run_one_shard(stage: ShardStage, config, path: Path, shard_dir: Path, options: RunOptions | None = None) -> Path:
    """Compute one input file's shard in a watched worker process (a hung or crashing document is
    dropped as in a whole run), unless it is already there; for executors that map shards
    themselves (the Dask runner)."""
    if not (Path(shard_dir) / SHARD_MANIFEST).is_file():
        _ShardPool(stage, config, options or RunOptions(workers=1, progress=False), [Path(path)], [Path(shard_dir)], [0]).run()
    return Path(shard_dir)


class _ShardPool:
    """Runs shards in worker processes and watches each for a stalled or crashed document."""

    def __init__(self, stage, config, options: RunOptions, files, shard_dirs, todo):
        self.stage, self.config, self.options = stage, config, options
        self.files, self.shard_dirs = files, shard_dirs
        self.queue = list(todo)
        # forkserver: workers fork from a clean, single-threaded server (forking the caller could
        # copy a lock held by one of Prefect's threads); the preload makes each fork start warm.
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["pipeline.runner", "pyarrow.parquet", stage.step.__module__])
        self.progress = self.ctx.Array("q", 2 * max(1, options.workers), lock=False)
        self.skips: dict[int, dict[int, str]] = {i: {} for i in todo}
        self.restarts: dict[int, int] = {i: 0 for i in todo}
        self.done_units = 0
        self.shown = 0
        self.bar = None
        if options.progress:
            self.bar = _progress_bar(stage, [files[i] for i in todo])

    def run(self) -> None:
        running: dict[int, tuple] = {}  # slot -> (process, shard index, last count, last change time)
        free_slots = list(range(max(1, self.options.workers)))
        try:
            while self.queue or running:
                while self.queue and free_slots:
                    slot = free_slots.pop()
                    running[slot] = self._start(slot, self.queue.pop(0))
                time.sleep(0.05)
                for slot in list(running):
                    proc, index, last_count, last_change = running[slot]
                    count = self.progress[2 * slot]
                    if proc.exitcode is None:
                        now = time.monotonic()
                        if count != last_count:
                            running[slot] = (proc, index, count, now)
                        elif now - last_change > self.options.doc_timeout:
                            proc.kill()
                            proc.join()
                            self._redo_without(slot, index, count, "doc_timeout")
                            running[slot] = self._start(slot, index)
                        continue
                    proc.join()
                    if proc.exitcode == 0:
                        del running[slot]
                        free_slots.append(slot)
                        self.done_units += self._units_of(index)
                    elif proc.exitcode > 0 or count == 0:
                        # An exception (3), or a worker that died before reading anything: the
                        # stage itself is broken, and redoing the file would fail the same way.
                        raise RuntimeError(f"stage {self.stage.name}: worker for {self.files[index].name} exited "
                                           f"with code {proc.exitcode} (traceback above)")
                    else:  # killed by a signal mid-document: that document crashed the process
                        self._redo_without(slot, index, count, "worker_crashed")
                        running[slot] = self._start(slot, index)
                self._update_bar(running)
        finally:
            for proc, *_ in running.values():
                proc.kill()
            if self.bar is not None:
                self.bar.close()

    def _start(self, slot: int, index: int):
        self.progress[2 * slot] = 0
        self.progress[2 * slot + 1] = 0
        proc = self.ctx.Process(
            target=_shard_worker,
            args=(self.stage, self.config, self.options.keep_rejects, self.files[index],
                  self.shard_dirs[index], self.skips[index], self.progress, slot),
            daemon=True,
        )
        proc.start()
        return (proc, index, 0, time.monotonic())

    def _redo_without(self, slot: int, index: int, count: int, reason: str) -> None:
        doc_index = max(0, count - 1)
        self.restarts[index] += 1
        if self.restarts[index] > MAX_RESTARTS_PER_SHARD or doc_index in self.skips[index]:
            raise RuntimeError(f"{self.files[index].name}: {self.restarts[index]} restarts "
                               f"(document #{doc_index} {reason.replace('_', ' ')} again); giving up on this stage")
        self.skips[index][doc_index] = reason
        print(f"warning: {self.files[index].name}: document #{doc_index} dropped ({reason}); redoing the file without it",
              file=sys.stderr, flush=True)

    def _units_of(self, index: int) -> int:
        if self.stage.progress_by_bytes:
            return self.files[index].stat().st_size
        return _shard_manifest_docs(self.shard_dirs[index])

    def _update_bar(self, running) -> None:
        if self.bar is None:
            return
        unit = 1 if self.stage.progress_by_bytes else 0
        in_flight = sum(self.progress[2 * slot + unit] for slot in running)
        now = self.done_units + in_flight
        if now != self.shown:  # update() (not n=...) so tqdm's refresh interval applies
            self.bar.update(now - self.shown)
            self.shown = now


def _shard_manifest_docs(shard_dir: Path) -> int:
    return _load_json(shard_dir / SHARD_MANIFEST)["stats"]["docs_in"]


def _progress_bar(stage, files):
    from tqdm import tqdm

    if stage.progress_by_bytes:
        total = sum(f.stat().st_size for f in files)
        return tqdm(total=total, unit="B", unit_scale=True, desc=stage.name, file=sys.stderr, mininterval=_interval())
    rows = [parquet_rows(f) for f in files]
    total = sum(rows) if all(r is not None for r in rows) else None
    return tqdm(total=total, unit="docs", unit_scale=True, desc=stage.name, file=sys.stderr, mininterval=_interval())


def _interval() -> float:
    # A terminal redraws in place; a log (CI, Prefect worker) gets a line every 10 s instead.
    return 0.5 if sys.stderr.isatty() else 10.0


def _shard_worker(stage, config, keep_rejects, path, shard_dir, skips, progress, slot) -> None:
    """Entry point of a worker process: compute one shard and commit it atomically."""
    try:
        compute_shard(stage, config, Path(path), Path(shard_dir), keep_rejects, skips, progress, slot)
    except BaseException:  # noqa: BLE001 - report any bug in a step, then exit with a code the parent knows
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)


def compute_shard(stage: ShardStage, config, path: Path, shard_dir: Path, keep_rejects: int = 0,
                  skips: dict[int, str] | None = None, progress=None, slot: int = 0) -> dict:
    """Read one input file, run the step, write `data.parquet` and the shard manifest."""
    skips = skips or {}
    ctx = ShardContext(path, keep_rejects, [c for c, _ in stage.signals])
    counts = {"docs_in": 0, "bytes_in": 0, "docs_out": 0, "bytes_out": 0}
    error = None
    input_schema = _input_schema(stage, path)
    schema = stage.output_schema(input_schema, config)
    added_fields = stage.fields_added(config)

    def counted_input():
        for doc in stage.read(path, config, ctx):
            index = counts["docs_in"]
            counts["docs_in"] += 1
            counts["bytes_in"] += _size(doc.get(stage.bytes_in_column))
            if progress is not None:
                progress[2 * slot] = counts["docs_in"]
                progress[2 * slot + 1] = ctx.position
            if index in skips:
                ctx.drop(doc, skips[index])
                continue
            yield doc

    with AtomicDir(shard_dir, SHARD_MANIFEST) as out:
        writer = None
        batch: list[dict] = []

        def flush():
            nonlocal writer, schema
            table = pa.Table.from_pylist(batch, schema=schema)
            if schema is None:  # JSONL input: inferred columns, but the stage's own have their declared types
                table = _conform(table, added_fields, stage.kept_columns)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(out.path("data.parquet"), schema, **_parquet_options(schema))
            writer.write_table(table)
            batch.clear()

        try:
            for doc in stage.step(counted_input(), config, ctx):
                ctx.record_signals(doc)
                counts["docs_out"] += 1
                counts["bytes_out"] += _size(doc.get(stage.bytes_out_column))
                batch.append(doc)
                if len(batch) >= stage.write_batch_rows:
                    flush()
        except ShardError as exc:
            ctx.fault(exc.reason, str(exc))
            error = str(exc)
        if batch or writer is None and schema is not None:
            flush()
        if writer is not None:
            writer.close()
        else:  # nothing at all, schema unknown (e.g. an unreadable JSONL file): an empty table
            pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                           out.path("data.parquet"), **PARQUET_OPTIONS)
        if ctx.rejects:
            pq.write_table(pa.Table.from_pylist(ctx.rejects), out.path("rejects.parquet"), **PARQUET_OPTIONS)
        if ctx.signal_columns:
            pq.write_table(pa.table({c: pa.array(v, pa.float32()) for c, v in ctx.signals.items()}),
                           out.path("signals.parquet"), **PARQUET_OPTIONS)
        manifest = {
            "source": str(path),
            "rows": counts["docs_out"],
            "error": error,
            "fault_messages": ctx.fault_messages,
            "stats": {**counts, "dropped": dict(ctx.dropped), "faults": dict(ctx.faults),
                      "skipped": dict(ctx.skipped), "extra": dict(ctx.extra)},
            "data": describe_file(out.path("data.parquet"), counts["docs_out"]),
        }
        out.commit(manifest)
    return manifest


def _conform(table: pa.Table, fields: Sequence[pa.Field], kept_columns: Sequence[str] | None) -> pa.Table:
    own = {f.name: f for f in fields}
    columns = [c for c in table.column_names if c in own or kept_columns is None or c in kept_columns]
    table = table.select(columns)
    for name, wanted in own.items():
        if name in table.column_names and table.schema.field(name).type != wanted.type:
            table = table.set_column(table.column_names.index(name), wanted, table.column(name).cast(wanted.type))
    return table


def _input_schema(stage: ShardStage, path: Path) -> pa.Schema | None:
    if not has_suffix(path, (".parquet",)):
        return None
    try:
        schema = pq.ParquetFile(path).schema_arrow
    except Exception:
        return None
    if "id" not in schema.names:
        schema = schema.append(pa.field("id", pa.string()))
    return schema


def _size(value) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return 0


# ---------------------------------------------------------------------------------- global stages

def _scratch_dir(store: ArtifactStore, stage, key: str) -> Path:
    return store.root / stage.name / f".work-{key}-{os.getpid()}"


class ShardCache:
    """Per-input-file cache folders for a global stage whose work divides along its inputs (dedup:
    file k's decisions depend only on files 0..k). `path(*parts)` names a folder by the stage's
    key fields and the given parts (e.g. a chain of digests); committing into it is the stage's job
    (AtomicDir with a shard manifest), so an interrupted run keeps the shards it finished."""

    def __init__(self, store: ArtifactStore, stage, config, options: RunOptions, digests: Sequence[str]):
        self.store, self.stage, self.config, self.options = store, stage, config, options
        self.digests = list(digests)

    def path(self, *parts) -> Path:
        return self.store.shard_path(self.stage.name, content_key(self.stage.name, self.stage.version, key_fields(self.config),
                                                                 self.options.keep_rejects, "shard", list(parts)))


def _run_global(stage: GlobalStage, files, digests, config, store: ArtifactStore, options: RunOptions, key: str, against):
    scratch = _scratch_dir(store, stage, key)
    scratch.mkdir(parents=True, exist_ok=True)
    extra = {"shards": ShardCache(store, stage, config, options, digests)} if stage.cached_shards else {}
    try:
        outputs, stats, side = stage.run(files, config, scratch, against=against, **extra)
        if not stats.get("docs_in") and stats.get("fault_messages"):  # as shard stages: no empty artifact
            raise nothing_readable(stats["fault_messages"], len(files))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    # (path, rows), or (path, name in the artifact, rows) when the stage names its parts itself
    return [o if len(o) == 3 else (o[0], o[0].name, o[1]) for o in outputs], stats, side


# ------------------------------------------------------------------------------------- assembling

def _materialise(out: AtomicDir, outputs, side) -> dict:
    described = []
    for source, name, rows in outputs:
        target = out.path(name)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        described.append(describe_file(target, rows))
    side_described = []
    for name, value in side.items():
        target = out.path(name)
        if isinstance(value, pa.Table):
            pq.write_table(value, target, **PARQUET_OPTIONS)
            side_described.append(describe_file(target, value.num_rows))
        elif isinstance(value, CopyOf):  # another artifact's file: never moved away from it
            shutil.copyfile(value.path, target)
            side_described.append(describe_file(target))
        else:
            os.replace(value, target)
            side_described.append(describe_file(target))
    return {"outputs": described, "side_outputs": side_described}


def _write_report(stage: ShardStage, config, out: AtomicDir) -> bool:
    signal_path = out.path("signals.parquet")
    if not signal_path.exists() or not stage.signals:
        return False
    from pipeline.report import signal_histograms

    thresholds = {column: getattr(config, field_name) if field_name else None for column, field_name in stage.signals}
    return signal_histograms(pq.read_table(signal_path), thresholds, out.path("report.png"), title=stage.name) is not None
