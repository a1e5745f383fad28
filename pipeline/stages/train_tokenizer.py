"""Stage `train-tokenizer`: byte-level BPE on a deterministic, capped sample of the input text.

The sample: every document contributes at most `doc_max_chars` characters (its start), and when
the inputs hold more than `max_chars` such characters each document is taken with probability
max_chars / total, decided by a hash of (seed, id): the same input and knobs give the same sample
on any machine, spread evenly over all input files rather than their first ones.
Output: `tokenizer.json` (see pipeline/tokenizer.py) and `report.png`, bytes per token per
language measured on the sample (the `language` column, when present)."""
from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import xxhash
from tqdm import tqdm

from pipeline.documents import nothing_readable, stage_inputs
from pipeline.errors import StageError
from pipeline.knobs import knob
from pipeline.stage import GlobalStage, ShardContext
from pipeline.text_table import read_text_table
from pipeline.tokenizer import MIN_VOCAB, SPECIAL_TOKENS, train_bpe

READ_COLUMNS = ("id", "text", "language")
REPORT_CHARS_PER_LANGUAGE = 200_000  # of the sample, kept to measure bytes per token


@dataclass
class TrainTokenizerConfig:
    vocab_size: int = knob(32768, f"Tokens in the vocabulary, the {len(SPECIAL_TOKENS)} special tokens included "
                                  "(fewer when the text runs out of pairs to merge).")
    max_chars: int = knob(2_000_000_000, "Train on at most this many characters: a deterministic sample of "
                                         "documents (by a hash of id) when the input holds more.")
    doc_max_chars: int = knob(10_000, "Each document contributes at most its first N characters, so one huge "
                                      "page cannot dominate the merges.")
    seed: int = knob(0, "Seed of the document sample.")

    def check(self) -> None:
        if self.vocab_size < MIN_VOCAB:
            raise StageError(f"train-tokenizer: vocab_size must be at least {MIN_VOCAB}, got {self.vocab_size}")
        if self.vocab_size > 2**31 - 1:
            raise StageError(f"train-tokenizer: vocab_size too large: {self.vocab_size}")
        for name in ("max_chars", "doc_max_chars"):
            if getattr(self, name) < 1:
                raise StageError(f"train-tokenizer: {name} must be at least 1, got {getattr(self, name)}")


def _sampled(doc_id: str, seed: int, rate: float) -> bool:
    return rate >= 1.0 or xxhash.xxh64_intdigest(f"{seed}:{doc_id}".encode("utf-8", "surrogatepass")) < rate * 2**64


def run_train_tokenizer(files: list[Path], config: TrainTokenizerConfig, out_dir: Path, against=()):
    config.check()
    ctx = ShardContext(files[0] if files else out_dir)  # counts and prints bad rows once (pass one)
    # Pass one: how much capped text there is, so the sampling rate is known before training.
    docs_in = bytes_in = capped_total = 0
    for path in files:
        table = read_text_table(path, ctx.fault, ("id", "text"))
        lengths = pc.fill_null(pc.utf8_length(table.column("text")), 0)
        docs_in += table.num_rows
        bytes_in += int(pc.sum(pc.fill_null(pc.binary_length(table.column("text")), 0)).as_py() or 0)
        capped_total += int(pc.sum(pc.min_element_wise(lengths, config.doc_max_chars)).as_py() or 0)
    if docs_in == 0 and ctx.fault_messages:
        raise nothing_readable(ctx.fault_messages, len(files))
    if capped_total == 0:
        raise StageError("train-tokenizer: the input holds no text to train on")
    rate = config.max_chars / capped_total
    sample = {"docs": 0, "chars": 0, "bytes": 0}
    by_language: dict[str, list[str]] = defaultdict(list)
    held_chars: dict[str, int] = defaultdict(int)
    bar = tqdm(total=min(capped_total, config.max_chars), unit="char", unit_scale=True, desc="train-tokenizer: reading",
               file=sys.stderr, disable=None)

    def sample_texts():  # pass two, pulled by the trainer
        for path in files:
            table = read_text_table(path, lambda reason, message: None, READ_COLUMNS)
            languages = table.column("language").to_pylist() if "language" in table.column_names else None
            for row, (doc_id, text) in enumerate(zip(table.column("id").to_pylist(), table.column("text").to_pylist())):
                if not text or not _sampled(str(doc_id), config.seed, rate):
                    continue
                text = text[:config.doc_max_chars]
                sample["docs"] += 1
                sample["chars"] += len(text)
                sample["bytes"] += len(text.encode("utf-8", "surrogatepass"))
                bar.update(len(text))
                language = (languages[row] if languages else None) or "all"
                if held_chars[language] < REPORT_CHARS_PER_LANGUAGE:
                    by_language[language].append(text)
                    held_chars[language] += len(text)
                yield text

    try:
        tokenizer = train_bpe(sample_texts(), config.vocab_size)
    finally:
        bar.close()
    tokenizer.save(str(out_dir / "tokenizer.json"))
    bytes_per_token = _bytes_per_token(tokenizer, by_language)
    side = {"tokenizer.json": out_dir / "tokenizer.json"}
    if _plot_bytes_per_token(bytes_per_token, tokenizer.get_vocab_size(), out_dir / "report.png"):
        side["report.png"] = out_dir / "report.png"
    stats = {
        "docs_in": docs_in, "docs_out": sample["docs"], "bytes_in": bytes_in, "bytes_out": sample["bytes"],
        "dropped": {}, "faults": dict(ctx.faults), "fault_messages": ctx.fault_messages, "skipped": {},
        "extra": {"sample_chars": sample["chars"], "vocab_size": tokenizer.get_vocab_size(),
                  "merges": tokenizer.get_vocab_size() - 256 - len(SPECIAL_TOKENS)},
        "bytes_per_token": bytes_per_token,
    }
    return [], stats, side


def _bytes_per_token(tokenizer, by_language: dict[str, list[str]]) -> dict[str, float]:
    result = {}
    for language, texts in sorted(by_language.items()):
        tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
        result[language] = round(sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / max(tokens, 1), 3)
    return result


def _plot_bytes_per_token(bytes_per_token: dict[str, float], vocab_size: int, path: Path) -> bool:
    if not bytes_per_token:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(bytes_per_token.items(), key=lambda kv: -kv[1])
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(items) + 2), 3.4))
    ax.bar([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    ax.set_ylabel("UTF-8 bytes per token")
    ax.set_title(f"train-tokenizer: bytes per token by language (vocab {vocab_size})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


STAGE = GlobalStage(
    name="train-tokenizer",
    version="1",
    config_cls=TrainTokenizerConfig,
    run=run_train_tokenizer,
    description="Trains a byte-level BPE tokenizer (GPT-4 split, rustbpe trainer, Hugging Face tokenizer.json) "
                "on a deterministic, capped sample of the input text.",
    input_files=stage_inputs("train-tokenizer"),
)
