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


def load_input_model(files: Sequence[Path], device: str = "auto"):
    """The model of `checkpoint_files`' folder on `device` ("auto": CUDA when there is one), with its
    tokenizer: (model, tokenizer, tokenizer_path, meta). A broken checkpoint is one StageError line."""
    import torch
    from tokenizers import Tokenizer

    from model.checkpoint import CheckpointError, load_model

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model, tokenizer_path, meta = load_model(Path(files[0]).parent, device)
    except CheckpointError as exc:
        raise StageError(str(exc)) from None
    return model, Tokenizer.from_file(str(tokenizer_path)), tokenizer_path, meta
