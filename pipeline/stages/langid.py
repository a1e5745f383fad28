"""Stage `langid`: fastText lid.176 tags `language` and `language_score`, then keeps the wanted languages."""
from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from pipeline.documents import stage_inputs
from pipeline.langid import LangIdConfig, tag_and_filter
from pipeline.stage import ShardContext, ShardStage


def identify_languages(docs: Iterator[dict], config: LangIdConfig, ctx: ShardContext) -> Iterator[dict]:
    return tag_and_filter(docs, config, ctx.drop)


STAGE = ShardStage(
    name="langid",
    version="1",
    config_cls=LangIdConfig,
    step=identify_languages,
    description="Adds `language` and `language_score` (fastText lid.176); keeps --languages with score ≥ --min-language-score.",
    added_fields=(pa.field("language", pa.string()), pa.field("language_score", pa.float32())),
    signals=(("language_score", "min_language_score"),),
    input_files=stage_inputs("langid"),
)
