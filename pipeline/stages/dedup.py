"""Stage `dedup`: exact and MinHash-LSH near-duplicate removal across all inputs.

Files are decided in input order, each against everything kept before it (`pipeline.dedup.Deduper`):
per file, one read of `id`, `text` and `language` to sketch and decide, one read to write the kept
rows. Memory holds the sketches of kept documents and the LSH, never the texts of other files.
Each file's result is a cached shard keyed by the chain of digests up to it, so a new file
appended to the inputs computes only itself. Beside the data: `removed.parquet` (id,
duplicate_of, jaccard, kind) to audit each decision, `index.parquet` (signatures of the kept
documents) for `--against` in a later run, and `report.png` (duplicate-cluster sizes)."""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.dedup import (REMOVED_SCHEMA, DedupConfig, Deduper, Sketches, index_table, load_index, removed_table,
                            result_of, sketch_documents)
from pipeline.documents import parquet_rows, stage_inputs
from pipeline.errors import StageError
from pipeline.report import signal_histograms
from pipeline.runner import sum_stats
from pipeline.stage import GlobalStage, ShardContext
from pipeline.text_table import read_text_table
from storage.keys import content_key, file_digest
from storage.store import AtomicDir, is_artifact

PARQUET_OPTIONS = dict(compression="zstd")


def against_index_files(against: Sequence[str | Path]) -> list[Path]:
    """`--against` takes earlier dedup artifacts (their index.parquet) or index files."""
    files = []
    for item in against:
        path = Path(item)
        if path.is_dir() and is_artifact(path) and (path / "index.parquet").exists():
            files.append(path / "index.parquet")
        elif path.is_file():
            files.append(path)
        else:
            raise StageError(f"{item}: not a dedup artifact (no index.parquet) nor an index file")
    return files


SKETCH_COLUMNS = ("id", "text", "language")  # all that the decision needs
SHARD_MANIFEST = "shard.json"


class _ScratchShards:
    """Shard folders inside the output folder, for a run without a store (a library call)."""

    def __init__(self, out_dir: Path, files: Sequence[Path]):
        self.out_dir, self.digests = out_dir, [file_digest(f) for f in files]

    def path(self, *parts) -> Path:
        return self.out_dir / f".shard-{content_key(*parts)}"


def run_dedup(files: list[Path], config: DedupConfig, out_dir: Path, against: Sequence[str | Path] = (), shards=None):
    """Files in order, each decided against everything kept before it (see `pipeline.dedup.Deduper`).

    File k's result is cached under a key chaining the digests of the `against` indexes and of
    files 0..k: when files are appended (a new WARC's shard), the finished prefix is reused as it
    is (its parts byte for byte, its index loaded into the LSH) and only the new files are read."""
    config.check()
    against_files = against_index_files(against) if against else []
    previous = load_index(against_files, config) if against_files else None
    shards = shards or _ScratchShards(out_dir, files)
    link = content_key("against", [file_digest(f) for f in against_files])
    shard_dirs = []
    for digest in shards.digests:
        link = content_key(link, digest)
        shard_dirs.append(shards.path(link))
    done = 0
    while done < len(files) and (shard_dirs[done] / SHARD_MANIFEST).is_file():
        done += 1

    deduper = Deduper(config, previous)
    rows = [parquet_rows(f) for f in files[done:]]
    bar = tqdm(total=sum(rows) if None not in rows else None, unit="docs", unit_scale=True, desc="dedup",
               file=sys.stderr, disable=None)
    try:
        if done:  # what the reused files kept, in order, so later files are decided against it
            kept = load_index([d / "index.parquet" for d in shard_dirs[:done]], config)
            deduper.add_kept(kept.ids, kept.sketches)
        for path, shard_dir in zip(files[done:], shard_dirs[done:]):
            _dedup_file(path, deduper, config, shard_dir)
            bar.update(_load_json(shard_dir / SHARD_MANIFEST)["stats"]["docs_in"])
    finally:
        deduper.close()
        bar.close()
    return _assemble(shard_dirs, out_dir, len(previous) if previous else 0, reused=done)


def _dedup_file(path: Path, deduper: Deduper, config: DedupConfig, shard_dir: Path) -> None:
    ctx = ShardContext(path)  # prints and counts bad rows once (the second read is quiet)
    table = read_text_table(path, ctx.fault, SKETCH_COLUMNS)
    ids = [str(i) for i in table.column("id").to_pylist()]
    texts = [t or "" for t in table.column("text").to_pylist()]
    languages = table.column("language").to_pylist() if "language" in table.column_names else None
    sketches = sketch_documents(texts, languages, config)
    decision = deduper.add_batch(ids, sketches)
    result = result_of(deduper, decision)
    bytes_in = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    bytes_out = sum(len(t.encode("utf-8", "surrogatepass")) for t, k in zip(texts, decision.keep) if k)
    del table, texts
    with AtomicDir(shard_dir, SHARD_MANIFEST) as out:
        kept_table = read_text_table(path, lambda reason, message: None).filter(pa.array(decision.keep))
        pq.write_table(kept_table, out.path("data.parquet"), **PARQUET_OPTIONS)
        pq.write_table(removed_table(ids, result), out.path("removed.parquet"), **PARQUET_OPTIONS)
        kept_rows = np.flatnonzero(decision.keep)
        index = index_table([ids[i] for i in kept_rows],
                            Sketches(sketches.text_hashes[kept_rows], sketches.signatures[kept_rows]), config)
        pq.write_table(index, out.path("index.parquet"), **PARQUET_OPTIONS)
        counts = result.counts
        out.commit({
            "source": str(path),
            "rows": int(decision.keep.sum()),
            "fault_messages": ctx.fault_messages,
            "stats": {
                "docs_in": len(ids), "docs_out": int(decision.keep.sum()), "bytes_in": bytes_in, "bytes_out": bytes_out,
                "dropped": {k: v for k, v in (("exact_duplicate", counts["removed_exact"]),
                                               ("near_duplicate", counts["removed_near"])) if v},
                "faults": dict(ctx.faults), "skipped": {},
                "extra": {k: v for k, v in counts.items()
                          if k not in ("removed_exact", "removed_near", "against_documents", "documents", "kept")},
            },
        })


def _assemble(shard_dirs: list[Path], out_dir: Path, against_documents: int, reused: int):
    shards = [_load_json(d / SHARD_MANIFEST) for d in shard_dirs]
    outputs = [(d / "data.parquet", f"part-{k:05d}.parquet", s["rows"]) for k, (d, s) in enumerate(zip(shard_dirs, shards))]
    removed = pa.concat_tables([pq.read_table(d / "removed.parquet") for d in shard_dirs]) if shard_dirs else \
        pa.table({name: pa.array([], t) for name, t in zip(REMOVED_SCHEMA.names, REMOVED_SCHEMA.types)})
    pq.write_table(removed, out_dir / "removed.parquet", **PARQUET_OPTIONS)
    index_parts = [pq.read_table(d / "index.parquet") for d in shard_dirs]
    if index_parts:
        pq.write_table(pa.concat_tables(index_parts), out_dir / "index.parquet", **PARQUET_OPTIONS)
    side = {"removed.parquet": out_dir / "removed.parquet"}
    if index_parts:
        side["index.parquet"] = out_dir / "index.parquet"
    survivors = removed.column("duplicate_of").to_pylist()
    cluster_sizes = np.array(sorted(Counter(survivors).values()), dtype=np.float32) + 1
    if len(cluster_sizes):
        sizes = pa.table({"duplicate_cluster_size": pa.array(cluster_sizes, pa.float32())})
        if signal_histograms(sizes, {"duplicate_cluster_size": None}, out_dir / "report.png", title="dedup"):
            side["report.png"] = out_dir / "report.png"
    stats = sum_stats([s["stats"] for s in shards])
    stats["fault_messages"] = [m for s in shards for m in s.get("fault_messages", [])][:100]
    stats["extra"].update(duplicate_clusters=len(cluster_sizes), against_documents=against_documents)
    stats["shards"] = {"total": len(shards), "computed": len(shards) - reused, "reused": reused}
    return outputs, stats, side


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


STAGE = GlobalStage(
    name="dedup",
    version="2",
    config_cls=DedupConfig,
    run=run_dedup,
    description="Removes exact duplicates and MinHash-LSH near-duplicates (datasketch) across all inputs; "
                "writes removed.parquet (duplicate_of) and index.parquet (for --against).",
    resolve_against=against_index_files,
    cached_shards=True,
    input_files=stage_inputs("dedup"),
)
