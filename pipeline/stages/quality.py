"""Stage `quality`: Gopher quality and repetition, C4 and FineWeb heuristics.

Every document gets its signal columns (dolma-style, so a later re-filter is a cheap column
predicate); documents failing a rule are dropped with that rule's name as the reason."""
from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from pipeline.documents import stage_inputs
from pipeline.quality import SIGNAL_KEYS, QualityConfig, tag_and_filter
from pipeline.stage import ShardContext, ShardStage


def filter_quality(docs: Iterator[dict], config: QualityConfig, ctx: ShardContext) -> Iterator[dict]:
    return tag_and_filter(docs, config, ctx.drop)


STAGE = ShardStage(
    name="quality",
    version="1",
    config_cls=QualityConfig,
    step=filter_quality,
    description="Adds quality signal columns; drops documents failing Gopher quality/repetition, C4 or FineWeb rules.",
    added_fields=tuple(pa.field(name, pa.int32() if kind is int else pa.float32()) for name, kind in SIGNAL_KEYS.items()),
    input_files=stage_inputs("quality"),
    signals=(
        ("word_count", "gopher_min_words"),
        ("mean_word_length", "gopher_min_mean_word_length"),
        ("dup_line_char_frac", "gopher_max_dup_line_char_frac"),
        ("top_2gram_char_frac", "gopher_max_top_2gram_char_frac"),
        ("line_punct_frac", "fineweb_min_line_punct_frac"),
        ("short_line_frac", "fineweb_max_short_line_frac"),
    ),
)
