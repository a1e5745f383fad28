"""What a model stage (evaluate, sft, classify, dpo) reads as `--input`: one pretrain/sft artifact or
checkpoint folder, i.e. its weights, config and tokenizer. Their digests are the stage's input digests."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pipeline.errors import StageError


def checkpoint_files(inputs: Sequence, stage: str) -> list[Path]:
    from model.checkpoint import MODEL_FILES, CheckpointError, latest_checkpoint

    if len(inputs) != 1:
        raise StageError(f"{stage} takes one pretrain or sft artifact (or checkpoint folder), got {len(inputs)} inputs")
    path = Path(inputs[0])
    if not path.exists():
        raise StageError(f"{path}: no such file or folder")
    try:
        folder = latest_checkpoint(path, MODEL_FILES)
    except CheckpointError as exc:
        raise StageError(f"{exc} ({stage} reads a pretrain or sft artifact)") from None
    if not (folder / "tokenizer.json").is_file():
        raise StageError(f"{folder}: no tokenizer.json beside the weights")
    return [folder / name for name in MODEL_FILES] + [folder / "tokenizer.json"]
