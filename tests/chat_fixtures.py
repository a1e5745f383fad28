"""A tiny chat model built in seconds for the sft, chat and serving tests: the project's tokenizer
on patterned text, a tiny GPT pretrained on it briefly, and Alpaca-style questions whose answers the
text holds ("what does the dog do?" → "the dog barks loudly.")."""
from __future__ import annotations

import json
from pathlib import Path

from eval_fixtures import ANIMALS, SOUNDS, pattern_text, tiny_gpt, train_on, train_tokenizer, write_checkpoint

QUESTION = "what does the {animal} do?"
ANSWER = "the {animal} {sound} loudly."


def write_instructions(path: Path, repeat: int = 8) -> Path:
    with open(path, "w") as f:
        for n in range(repeat):
            for animal in ANIMALS:
                f.write(json.dumps({"instruction": QUESTION.format(animal=animal),
                                    "output": ANSWER.format(animal=animal, sound=SOUNDS[animal])}) + "\n")
    return path


def base_checkpoint(root: Path, steps: int = 60, **sizes) -> tuple[Path, Path]:
    """(checkpoint folder, tokenizer.json) of a tiny GPT pretrained on the patterned text."""
    from tokenizers import Tokenizer

    root.mkdir(parents=True, exist_ok=True)
    tokenizer_path = train_tokenizer(root / "tokenizer.json", pattern_text(200))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    model = tiny_gpt(tokenizer.get_vocab_size(), **sizes)
    train_on(model, tokenizer, pattern_text(200), steps=steps)
    return write_checkpoint(root / "base", model, tokenizer_path), tokenizer_path


def fine_tuned(root: Path, **knobs) -> tuple[Path, Path, Path]:
    """(sft output folder, base checkpoint, data file): model/sft.fine_tune with test-sized knobs."""
    from model.sft import fine_tune
    from model.sft_config import SFTConfig

    base, _ = base_checkpoint(root)
    data = write_instructions(root / "animals.jsonl")
    settings = dict(max_steps=60, batch_tokens=256, lr=3e-3, eval_every=20)
    settings.update(knobs)
    fine_tune(SFTConfig(**settings), base, [data], root / "sft", progress=False)
    return root / "sft", base, data
