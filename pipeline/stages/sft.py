"""Stage `sft`: a pretrained (or already fine-tuned) GPT + instruction data → a chat model.

    scratchlm stage sft --input artifacts/pretrain/<key> --data data/align/instructions.jsonl

Input: one pretrain or sft artifact, or a checkpoint folder (its weights, config and tokenizer
enter the key). `--data`: JSONL/JSON files of Alpaca, chat (`messages`) or prompt/completion
records (model/chat.py); their content enters the key, not their paths. The work is model/sft.py.

Output folder: model.safetensors, config.json, tokenizer.json (so `generate`, `chat`, `evaluate`
and `export` take it like a pretrain artifact), metrics.jsonl and loss.png (loss on assistant
tokens, train and val), and with `--lora-rank` the adapter in PEFT's format (adapter_config.json,
adapter_model.safetensors: `PeftModel.from_pretrained(base, artifact)` reads the folder as is)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from model.sft_config import SFTConfig
from pipeline.errors import StageError
from pipeline.stage import GlobalStage
from pipeline.stages.model_inputs import checkpoint_files

SIDE_FILES = ("model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl", "loss.png")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def model_input_files(inputs: Sequence) -> list[Path]:
    return checkpoint_files(inputs, "sft")  # module level: stages are pickled


def data_references(config: SFTConfig) -> list[Path]:
    files = []
    for item in config.data:
        path = Path(item)
        if not path.is_file():
            raise StageError(f"{item}: no such data file" + (" (a folder: name the files)" if path.is_dir() else ""))
        files.append(path)
    return files


def run_sft(files: list[Path], config: SFTConfig, out_dir: Path, against=()):
    from model.sft import ERRORS, fine_tune, summary_lines

    if not config.data:
        raise StageError("sft: --data is required (JSONL/JSON instruction files)")
    folder = files[0].parent
    try:
        summary = fine_tune(config, folder, config.data, out_dir)
    except ERRORS as exc:
        raise StageError(f"sft: {exc}" if not str(exc).startswith(tuple(config.data)) else str(exc)) from None
    side = {name: out_dir / name for name in SIDE_FILES if (out_dir / name).is_file()}
    side.update({name: out_dir / name for name in ADAPTER_FILES if (out_dir / name).is_file()})
    lines = summary_lines(summary)
    for line in lines:
        print(line, file=sys.stderr)
    stats = {
        "docs_in": summary["examples"] + summary["too_long"], "docs_out": summary["train_examples"],
        "bytes_in": sum(Path(p).stat().st_size for p in config.data),
        "bytes_out": (out_dir / "model.safetensors").stat().st_size,
        "dropped": {"too_long": summary["too_long"]} if summary["too_long"] else {}, "faults": {}, "skipped": {},
        "extra": {}, "tokens": summary["tokens_seen"], "sft": summary, "summary_lines": lines,
    }
    return [], stats, side


STAGE = GlobalStage(
    name="sft",
    version="1",
    config_cls=SFTConfig,
    run=run_sft,
    description="Instruction-tunes a pretrain or sft artifact on chat data (--data: Alpaca, messages or "
                "prompt/completion JSONL/JSON): loss only on assistant tokens and the end-of-turn marker, "
                "full fine-tuning or LoRA (--lora-rank); writes model.safetensors, metrics.jsonl, loss.png.",
    input_suffixes=(".safetensors", ".json"),
    references=data_references,
    input_files=model_input_files,
)
