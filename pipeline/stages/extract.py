"""Stage `extract`: HTML → main text (Resiliparse), boilerplate removed, charset decoded."""
from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from pipeline.documents import read_documents, stage_inputs
from pipeline.html_text import ExtractLimits, html_to_text
from pipeline.stage import ShardContext, ShardStage

ExtractConfig = ExtractLimits


def extract_text(docs: Iterator[dict], config: ExtractConfig, ctx: ShardContext) -> Iterator[dict]:
    for doc in docs:
        html = doc.pop("html", None) or b""
        text, reason, encoding = html_to_text(html, doc.get("content_type") or "", config)
        doc["text"] = text
        doc["encoding"] = encoding
        if reason is not None:
            doc["text"] = html[:2000].decode("utf-8", "replace")  # what --keep-rejects shows
            ctx.drop(doc, reason)
            continue
        yield doc


def read_html_shard(path, config, ctx):
    """Ingest's Parquet, or a user's own: any Parquet/JSONL with an `html` column (bytes or str)."""
    yield from read_documents(path, ctx.fault, require="html")


STAGE = ShardStage(
    name="extract",
    version="1",
    config_cls=ExtractConfig,
    step=extract_text,
    read=read_html_shard,
    input_files=stage_inputs("extract", require="html"),
    description="HTML pages (ingest's output: an `html` column) → main text in `text`; boilerplate, scripts and styles removed.",
    added_fields=(pa.field("text", pa.string()), pa.field("encoding", pa.string())),
    removed_columns=("html",),
    bytes_in_column="html",
    bytes_out_column="text",
)
