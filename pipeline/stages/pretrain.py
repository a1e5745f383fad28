"""Stage `pretrain`: a tokenize artifact → a trained GPT (model/train.py does the work).

Input: one or more tokenize artifacts (their parts; the `tokenizer.json` beside them, identical in
all of them), or token part files plus a tokenizer.json. The key hashes the parts and the
tokenizer, the knobs of TrainConfig that change the result, and, with `--resume`, the digests of
the checkpoint's files (the path itself is not in the key). Same tokens and knobs: the artifact
comes back from the store without training.

Output folder: model.safetensors, optimizer.safetensors, config.json (model config, step, loader
state: a checkpoint that `--resume` continues and `evaluate` reads), tokenizer.json, metrics.jsonl,
loss.png and the TensorBoard event file (`tensorboard --logdir <artifact>`). Stats: `tokens` seen,
and under `train` the first, last and validation loss and the unigram entropy of the training
tokens, all in nats per token: a model that learned only token frequencies has a loss equal to that
entropy, so the validation loss should end well below it."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import pyarrow.parquet as pq

from model.train_config import TrainConfig, TrainError
from pipeline.documents import artifact_stage
from pipeline.errors import StageError
from pipeline.stage import GlobalStage

SIDE_FILES = ("model.safetensors", "optimizer.safetensors", "config.json", "tokenizer.json", "metrics.jsonl", "loss.png")


def token_input_files(inputs: Sequence) -> list[Path]:
    """`--input` items → the token parts, then the one tokenizer.json (its digest enters the key too)."""
    from model.data import DataError, open_token_artifact

    parts: list[Path] = []
    tokenizers: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise StageError(f"{item}: no such file or folder")
        if path.is_dir():
            made_by = artifact_stage(path)
            if made_by is not None and made_by != "tokenize":
                raise StageError(f"{item}: a {made_by} artifact; pretrain reads a tokenize artifact")
            try:
                files, tokenizer, _, _ = open_token_artifact(path)
            except DataError as exc:
                raise StageError(str(exc)) from None
            parts += files
            tokenizers.append(tokenizer)
        elif path.name.endswith(".parquet"):
            parts.append(_checked_token_part(path))
        elif path.name.endswith(".json"):
            tokenizers.append(_checked_tokenizer(path))
        else:
            raise StageError(f"{item}: neither a tokenize artifact, a token part (.parquet) nor a tokenizer.json")
    if not parts:
        raise StageError("pretrain: no token parts in the input (give a tokenize artifact)")
    if not tokenizers:
        raise StageError("pretrain: no tokenizer.json in the input (give a tokenize artifact, or add its tokenizer.json)")
    digests = {hashlib.sha256(t.read_bytes()).hexdigest() for t in tokenizers}
    if len(digests) > 1:
        raise StageError(f"pretrain: the inputs were tokenized with {len(digests)} different tokenizers "
                         f"({', '.join(str(t) for t in tokenizers[:3])}); token ids would not mean the same")
    return parts + tokenizers[:1]


def _checked_token_part(path: Path) -> Path:
    """A token part named directly must be one: Parquet with `tokens` as a list of integers."""
    import pyarrow as pa

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - a user's file that is not Parquet
        raise StageError(f"{path.name}: not a readable Parquet file ({str(exc).splitlines()[0][:120]})") from None
    if "tokens" not in schema.names:
        raise StageError(f"{path.name}: not a token part (no 'tokens' column; columns: {', '.join(schema.names)}); "
                         "run tokenize first")
    kind = schema.field("tokens").type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(kind.value_type):
        raise StageError(f"{path.name}: column 'tokens' is {kind}, not a list of token ids")
    return path


def _checked_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - a user's file that is not a tokenizer
        raise StageError(f"{path.name}: not a tokenizer.json ({str(exc).splitlines()[0][:120]})") from None
    return path


def pretrain_references(config: TrainConfig) -> list[Path]:
    """Files whose content (not path) names the output: with --resume the checkpoint's weights,
    optimizer and config; with --eval-benchmark the benchmark file scored during training."""
    references = []
    if config.eval_benchmark:
        path = Path(config.eval_benchmark)
        if not path.is_file():
            raise StageError(f"--eval-benchmark {path}: no such file")
        references.append(path)
    if not config.resume:
        return references
    from model.checkpoint import CheckpointError, checkpoint_files

    try:
        return checkpoint_files(config.resume) + references
    except CheckpointError as exc:
        raise StageError(f"--resume {exc}") from None


def run_pretrain(files: list[Path], config: TrainConfig, out_dir: Path, against=()):
    # torch is imported here, not at the top: every `scratchlm` command lists this stage's options.
    from model.checkpoint import CheckpointError
    from model.data import DataError, unigram_entropy
    from model.train import token_data, train
    from model.train_report import summary_lines

    parts = [f for f in files if f.name.endswith(".parquet")]
    tokenizer = next(f for f in files if f.name.endswith(".json"))
    try:
        config.check()
        _, _, vocab_size, eot_id = token_data((parts, tokenizer))
        entropy, train_tokens = unigram_entropy(parts, eot_id, vocab_size)
        if train_tokens == 0:
            raise StageError(f"pretrain: no 'train' documents in {len(parts)} token part(s)")
        summary = train(config, (parts, tokenizer), out_dir, reference_loss=entropy)
    except (DataError, CheckpointError, TrainError) as exc:
        raise StageError(f"pretrain: {exc}") from None
    side = {name: out_dir / name for name in SIDE_FILES if (out_dir / name).is_file()}
    side.update({p.name: p for p in sorted(out_dir.glob("events.out.tfevents.*")) if p.is_file()})
    docs = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    train_stats = {k: summary[k] for k in ("steps", "resumed_from", "first_loss", "last_loss", "recent_loss", "val_loss", "tokens_seen",
                                          "params", "flops_per_token", "tokens_per_s", "tokens_per_s_per_rank", "mfu",
                                          "seq_len", "micro_batch", "grad_accumulation", "world_size", "device",
                                          "eval", "warnings")}
    train_stats.update(unigram_entropy_nats=entropy, train_split_tokens=train_tokens, vocab_size=vocab_size)
    stats = {
        "docs_in": docs, "docs_out": 0, "bytes_in": sum(p.stat().st_size for p in parts),
        "bytes_out": (out_dir / "model.safetensors").stat().st_size,
        "dropped": {}, "faults": {}, "skipped": {}, "extra": {},
        "tokens": summary["tokens_seen"],
        "train": train_stats,
        "summary_lines": summary_lines(summary, entropy),
    }
    return [], stats, side


def print_summary(manifest: dict, echo=print) -> None:
    """The demo's report of a pretrain artifact: first and last loss, val loss, unigram entropy."""
    for line in manifest.get("stats", {}).get("summary_lines", []):
        echo(line)


STAGE = GlobalStage(
    name="pretrain",
    version="2",  # 2: shuffled loader, benchmark during training
    config_cls=TrainConfig,
    run=run_pretrain,
    description="Pretrains a GPT (model/train.py) on a tokenize artifact: AdamW, warmup + cosine/WSD, bf16 and "
                "torch.compile on GPU; writes model.safetensors, config.json, metrics.jsonl, loss.png, "
                "TensorBoard events. --resume continues a checkpoint exactly.",
    input_suffixes=(".parquet", ".json"),
    references=pretrain_references,
    input_files=token_input_files,
)
