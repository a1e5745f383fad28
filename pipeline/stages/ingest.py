"""Stage `ingest`: WARC files → Parquet of HTML pages (one output file per WARC)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from pipeline.documents import WARC_SUFFIXES, stage_inputs
from pipeline.errors import check_range
from pipeline.knobs import knob
from pipeline.stage import ShardContext, ShardStage
from pipeline.warc_reader import ReaderOptions, iter_html_records


@dataclass
class IngestConfig:
    only_ok_status: bool = knob(True, "Keep only 2xx HTTP responses (redirects and error pages are skipped and counted).")
    max_html_bytes: int = knob(8 << 20, "HTML bodies larger than this are skipped (html_too_large); bounds memory per record.")

    def check(self) -> None:
        check_range(self, "max_html_bytes", low=1)


def read_warc(path: Path, config: IngestConfig, ctx: ShardContext) -> Iterator[dict]:
    options = ReaderOptions(max_html_bytes=config.max_html_bytes)
    for record in iter_html_records(path, ctx.fault, on_skip=ctx.skip, options=options):
        ctx.position = int(record["source"].rsplit(":", 1)[1])
        if config.only_ok_status and not 200 <= record.get("http_status", 200) < 300:
            ctx.skip(f"http_status_{record['http_status'] // 100}xx")
            continue
        yield record
    ctx.end_of_file()


def keep_all(docs: Iterator[dict], config: IngestConfig, ctx: ShardContext) -> Iterator[dict]:
    return docs


STAGE = ShardStage(
    name="ingest",
    version="1",
    config_cls=IngestConfig,
    step=keep_all,
    read=read_warc,
    description="WARC (.warc, .warc.gz) → Parquet of HTML responses: id, url, warc_date, content_type, html, source.",
    added_fields=(
        pa.field("id", pa.string()),
        pa.field("url", pa.string()),
        pa.field("warc_date", pa.string()),
        pa.field("content_type", pa.string()),
        pa.field("http_status", pa.int16()),
        pa.field("html", pa.binary()),
        pa.field("source", pa.string()),
    ),
    input_suffixes=WARC_SUFFIXES,
    input_files=stage_inputs("ingest", WARC_SUFFIXES, require=None),
    bytes_in_column="html",
    bytes_out_column="html",
    progress_by_bytes=True,
)
