"""Finding input files and reading documents from Parquet or JSONL.

Every stage after `ingest` accepts a user's own corpus: Parquet or JSONL (optionally .gz) with a
`text` column. An `id` is made from the file name and row number when the column is missing.
"""
from __future__ import annotations

import glob
import gzip
import io
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ShardError, StageError
from storage.store import artifact_data_files, is_artifact

DOCUMENT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json")
WARC_SUFFIXES = (".warc", ".warc.gz")
READ_BATCH_ROWS = 1024


def has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def expand_inputs(inputs: Sequence[str | os.PathLike], suffixes: Sequence[str]) -> list[Path]:
    """Files, folders (searched recursively) and globs → a sorted, de-duplicated file list.

    An artifact folder contributes exactly the data files its manifest lists (not side files)."""
    found: list[Path] = []
    for item in inputs:
        item = str(item)
        matches = [Path(p) for p in sorted(glob.glob(item))] if glob.has_magic(item) else [Path(item)]
        if not matches or not all(m.exists() for m in matches):
            raise StageError(f"{item}: no such file or folder")
        for path in matches:
            if path.is_dir():
                if is_artifact(path):
                    found.extend(artifact_data_files(path))
                else:
                    found.extend(
                        p for p in sorted(path.rglob("*"))
                        if p.is_file() and has_suffix(p, suffixes) and not any(part.startswith(".") for part in p.relative_to(path).parts)
                    )
            else:
                found.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise StageError(f"{', '.join(map(str, inputs))}: no input files ({'/'.join(suffixes)}) found")
    return unique


def parquet_rows(path: Path) -> int | None:
    if has_suffix(path, (".parquet",)):
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:
            return None
    return None


def read_documents(path: Path, on_bad: Callable[[str, str], None], batch_rows: int = READ_BATCH_ROWS,
                   require: str = "text") -> Iterator[dict]:
    """Rows of a Parquet or JSONL file as dicts, with the `require`d column (`text`) present.

    A file that cannot be read at all raises ShardError; a bad JSONL line or a row whose text is
    not a string is reported through `on_bad(reason, message)` and skipped."""
    if has_suffix(path, (".parquet",)):
        yield from _read_parquet(path, on_bad, batch_rows, require)
    elif has_suffix(path, (".jsonl", ".jsonl.gz", ".json")):
        yield from _read_jsonl(path, on_bad, require)
    else:
        raise ShardError("unsupported_file", f"{path.name}: not Parquet or JSONL (expected {', '.join(DOCUMENT_SUFFIXES)})")


def _read_parquet(path: Path, on_bad, batch_rows: int, require: str) -> Iterator[dict]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise ShardError("unreadable_parquet", f"{path.name}: not a readable Parquet file ({_first_line(exc)})") from None
    names = parquet.schema_arrow.names
    if require not in names:
        raise ShardError(f"no_{require}_column", f"{path.name}: has no '{require}' column (columns: {', '.join(names)})")
    make_id = "id" not in names
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows):
            for doc in batch.to_pylist():
                if make_id:
                    doc["id"] = f"{path.stem}:{row}"
                row += 1
                if _column_ok(doc, require, path, row - 1, on_bad):
                    yield doc
    except (OSError, pa.ArrowException) as exc:
        on_bad("unreadable_parquet", f"{path.name}: unreadable after row {row} ({_first_line(exc)})")


def _read_jsonl(path: Path, on_bad, require: str) -> Iterator[dict]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as raw:
            stream = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
            for line_no, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as exc:
                    on_bad("bad_json_line", f"{path.name}:{line_no}: not valid JSON ({exc.msg})")
                    continue
                if not isinstance(doc, dict):
                    on_bad("bad_json_line", f"{path.name}:{line_no}: a JSON line must be an object")
                    continue
                doc.setdefault("id", f"{path.stem}:{line_no - 1}")
                doc["id"] = str(doc["id"])
                if _column_ok(doc, require, path, line_no - 1, on_bad):
                    yield doc
    except (OSError, EOFError) as exc:
        on_bad("unreadable_file", f"{path.name}: unreadable ({_first_line(exc)})")


def _column_ok(doc: dict, column: str, path: Path, row: int, on_bad) -> bool:
    value = doc.get(column)
    if column == "html" and isinstance(value, str):
        doc[column] = value = value.encode("utf-8")  # a user's own HTML as text
    if isinstance(value, (bytes, str) if column == "html" else str):
        return True
    if column not in doc:
        on_bad(f"no_{column}_column", f"{path.name}: row {row} has no '{column}'")
    else:
        on_bad(f"{column}_not_string", f"{path.name}: row {row} has a '{column}' that is not a string")
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

