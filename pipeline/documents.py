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


def read_documents(path: Path, on_bad: Callable[[str, str], None], batch_rows: int = READ_BATCH_ROWS) -> Iterator[dict]:
    """Rows of a Parquet or JSONL file as dicts, with `text` guaranteed to be a str.

    A file that cannot be read at all raises ShardError; a bad JSONL line or a row whose text is
    not a string is reported through `on_bad(reason, message)` and skipped."""
    if has_suffix(path, (".parquet",)):
        yield from _read_parquet(path, on_bad, batch_rows)
    elif has_suffix(path, (".jsonl", ".jsonl.gz", ".json")):
        yield from _read_jsonl(path, on_bad)
    else:
        raise ShardError("unsupported_file", f"{path.name}: not Parquet or JSONL (expected {', '.join(DOCUMENT_SUFFIXES)})")


def _read_parquet(path: Path, on_bad, batch_rows: int) -> Iterator[dict]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise ShardError("unreadable_parquet", f"{path.name}: not a readable Parquet file ({_first_line(exc)})") from None
    names = parquet.schema_arrow.names
    if "text" not in names:
        raise ShardError("no_text_column", f"{path.name}: has no 'text' column (columns: {', '.join(names)})")
    make_id = "id" not in names
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows):
            for doc in batch.to_pylist():
                if make_id:
                    doc["id"] = f"{path.stem}:{row}"
                row += 1
                if _text_ok(doc, path, row - 1, on_bad):
                    yield doc
    except (OSError, pa.ArrowException) as exc:
        on_bad("unreadable_parquet", f"{path.name}: unreadable after row {row} ({_first_line(exc)})")


def _read_jsonl(path: Path, on_bad) -> Iterator[dict]:
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
                if _text_ok(doc, path, line_no - 1, on_bad):
                    yield doc
    except (OSError, EOFError) as exc:
        on_bad("unreadable_file", f"{path.name}: unreadable ({_first_line(exc)})")


def _text_ok(doc: dict, path: Path, row: int, on_bad) -> bool:
    text = doc.get("text")
    if isinstance(text, str):
        return True
    if "text" not in doc:
        on_bad("no_text_column", f"{path.name}: row {row} has no 'text'")
    else:
        on_bad("text_not_string", f"{path.name}: row {row} has a 'text' that is not a string")
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def table_from_docs(docs: list[dict], schema: pa.Schema | None) -> pa.Table:
    if schema is None:
        return pa.Table.from_pylist(docs)
    return pa.Table.from_pylist(docs, schema=schema)
