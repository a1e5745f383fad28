"""One input file as an Arrow table of selected columns, for the global stages (dedup,
train-tokenizer) that read whole files column-wise instead of document by document."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.documents import has_suffix, read_documents
from pipeline.errors import ShardError, StageError


def read_text_table(path: Path, on_fault, columns: Sequence[str] | None = None) -> pa.Table:
    """`id` and `text` (and, given `columns`, only those of them that exist). Rows of JSONL whose
    text is not a string are reported through `on_fault(reason, message)` and left out."""
    if has_suffix(path, (".parquet",)):
        try:
            names = pq.read_schema(path).names
            table = pq.read_table(path, columns=[c for c in columns if c in names] if columns else None)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
            raise StageError(f"{path.name}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        if "text" not in table.column_names:
            raise StageError(f"{path.name}: has no 'text' column (columns: {', '.join(names)})")
        if not pa.types.is_string(table.schema.field("text").type) and not pa.types.is_large_string(table.schema.field("text").type):
            raise StageError(f"{path.name}: column 'text' is {table.schema.field('text').type}, not text")
        if "id" not in table.column_names:
            table = table.append_column("id", pa.array([f"{path.stem}:{i}" for i in range(len(table))], pa.string()))
        return table
    try:
        docs = list(read_documents(path, on_fault))
    except ShardError as exc:
        raise StageError(str(exc)) from None
    if columns:
        present = [c for c in columns if any(c in d for d in docs)]
        docs = [{c: d.get(c) for c in present} for d in docs]
    if not docs:
        return pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())})
    table = pa.Table.from_pylist(docs)
    return table.set_column(table.column_names.index("id"), "id", pa.array([str(i) for i in table.column("id").to_pylist()], pa.string()))
