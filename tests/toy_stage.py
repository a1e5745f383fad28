"""A tiny stage for testing the runner itself: it misbehaves on request (hangs, segfaults)."""
import os
import signal
import time
from dataclasses import dataclass

import pyarrow as pa

from pipeline.knobs import knob
from pipeline.stage import ShardStage


@dataclass
class LengthConfig:
    min_chars: int = knob(5, "Drop documents shorter than this.")
    workers_hint: int = knob(1, "Not part of the key.", in_key=False)


def measure_length(docs, config, ctx):
    for doc in docs:
        if "HANG" in doc["text"]:
            time.sleep(3600)
        if "EXIT" in doc["text"]:
            os._exit(1)  # a broken stage, not a bad document
        if "SEGFAULT" in doc["text"]:
            os.kill(os.getpid(), signal.SIGSEGV)
        doc["chars"] = len(doc["text"])
        if doc["chars"] < config.min_chars:
            ctx.drop(doc, "too_short")
            continue
        yield doc


STAGE = ShardStage(
    name="length", version="1", config_cls=LengthConfig, step=measure_length,
    description="Adds `chars`; drops short documents.",
    added_fields=(pa.field("chars", pa.int64()),), signals=(("chars", "min_chars"),),
)
