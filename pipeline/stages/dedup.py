"""Stage `dedup`: exact and MinHash-LSH near-duplicate removal across all inputs.

Two passes over the input files keep memory to the sketches (16 + 4 x num_perm bytes per
document): pass one reads `id`, `text` and `language` to sketch, then the decision is made for
all documents at once, and pass two streams each file again, writing only the kept rows.
Beside the data: `removed.parquet` (id, duplicate_of, jaccard, kind) to audit each decision,
`index.parquet` (signatures of the kept documents) for `--against` in a later run, and
`signals.parquet` (duplicate-cluster sizes) for the report."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.dedup import DedupConfig, Sketches, decide, index_table, load_index, removed_table, sketch_documents
from pipeline.documents import has_suffix, parquet_rows, read_documents
from pipeline.errors import ShardError, StageError
from pipeline.report import signal_histograms
from pipeline.stage import GlobalStage, ShardContext
from storage.store import is_artifact

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


SKETCH_COLUMNS = ("id", "text", "language")  # all that pass one needs


def _read_table(path: Path, on_fault, columns: Sequence[str] | None = None) -> pa.Table:
    """One input file as a table with `id` and `text` (and, given `columns`, only those that exist)."""
    if has_suffix(path, (".parquet",)):
        try:
            names = pq.read_schema(path).names
            table = pq.read_table(path, columns=[c for c in columns if c in names] if columns else None)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
            raise StageError(f"{path.name}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        if "text" not in table.column_names:
            raise StageError(f"{path.name}: has no 'text' column (columns: {', '.join(names)})")
        if "id" not in table.column_names:
            table = table.append_column("id", pa.array([f"{path.stem}:{i}" for i in range(len(table))], pa.string()))
        return table
    try:
        return pa.Table.from_pylist(list(read_documents(path, on_fault)))
    except ShardError as exc:
        raise StageError(str(exc)) from None


def run_dedup(files: list[Path], config: DedupConfig, out_dir: Path, against: Sequence[str | Path] = ()):
    config.check()
    ctx = ShardContext(files[0] if files else out_dir)  # counts and prints faults, once (pass one)
    previous = load_index(against_index_files(against), config) if against else None
    ids: list[str] = []
    parts, rows_per_file, bytes_in = [], [], 0
    rows = [parquet_rows(f) for f in files]
    bar = tqdm(total=sum(rows) if None not in rows else None, unit="docs", unit_scale=True, desc="dedup: sketching",
               file=sys.stderr, disable=None)
    for path in files:  # pass one: sketches only
        table = _read_table(path, ctx.fault, SKETCH_COLUMNS)
        bar.update(len(table))
        texts = [t or "" for t in table.column("text").to_pylist()]
        languages = table.column("language").to_pylist() if "language" in table.column_names else None
        parts.append(sketch_documents(texts, languages, config))
        ids.extend(str(i) for i in table.column("id").to_pylist())
        rows_per_file.append(len(table))
        bytes_in += sum(len(t.encode("utf-8")) for t in texts)
        del table, texts
    bar.close()
    sketches = Sketches.concat(parts, config.num_perm)
    result = decide(ids, sketches, config, previous)

    outputs, start, bytes_out = [], 0, 0
    for number, (path, rows) in enumerate(zip(files, rows_per_file)):  # pass two: kept rows
        keep = result.keep[start:start + rows]
        table = _read_table(path, lambda reason, message: None).filter(pa.array(keep))
        out = out_dir / f"part-{number:05d}.parquet"
        pq.write_table(table, out, **PARQUET_OPTIONS)
        bytes_out += sum(len(t.encode("utf-8")) for t in table.column("text").to_pylist() if t)
        outputs.append((out, table.num_rows))
        start += rows

    pq.write_table(removed_table(ids, result), out_dir / "removed.parquet", **PARQUET_OPTIONS)
    kept_rows = np.flatnonzero(result.keep)
    index = index_table([ids[i] for i in kept_rows],
                        Sketches(sketches.text_hashes[kept_rows], sketches.signatures[kept_rows]), config)
    pq.write_table(index, out_dir / "index.parquet", **PARQUET_OPTIONS)
    side = {"removed.parquet": out_dir / "removed.parquet", "index.parquet": out_dir / "index.parquet"}
    if len(result.cluster_sizes):
        sizes = pa.table({"duplicate_cluster_size": pa.array(result.cluster_sizes, pa.float32())})
        if signal_histograms(sizes, {"duplicate_cluster_size": None}, out_dir / "report.png", title="dedup"):
            side["report.png"] = out_dir / "report.png"

    counts = result.counts
    stats = {
        "docs_in": len(ids), "docs_out": int(result.keep.sum()), "bytes_in": bytes_in, "bytes_out": bytes_out,
        "dropped": {k: v for k, v in (("exact_duplicate", counts["removed_exact"]),
                                       ("near_duplicate", counts["removed_near"])) if v},
        "faults": dict(ctx.faults), "fault_messages": ctx.fault_messages, "skipped": {},
        "extra": {k: v for k, v in counts.items() if k not in ("removed_exact", "removed_near")},
    }
    return outputs, stats, side


STAGE = GlobalStage(
    name="dedup",
    version="1",
    config_cls=DedupConfig,
    run=run_dedup,
    description="Removes exact duplicates and MinHash-LSH near-duplicates (datasketch) across all inputs; "
                "writes removed.parquet (duplicate_of) and index.parquet (for --against).",
    resolve_against=against_index_files,
)
