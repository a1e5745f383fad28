"""Instruction tuning (supervised fine-tuning) of a pretrained GPT on chat examples.

    examples = [render_chat(tokenizer, messages) for messages in read_chat_examples(file)]
    summary = fine_tune(SFTConfig(...), "artifacts/pretrain/<key>", ["data/align/instructions.jsonl"], "out/")

What a step does: whole examples (ids and loss mask from model/chat.py, the one chat template) are
taken in a seeded order until `batch_tokens` would be passed; they are sorted by length and padded
on the right into micro-batches of at most `micro_batch_tokens` padded tokens. Targets are -100
(ignored) on padding and, with `mask_prompt`, everywhere but the assistant's tokens and its
<|assistant_end|>, so the model learns to answer and to stop. Attention is causal, so right padding
cannot change a sequence's logits: no packing mask is needed. The loss is the mean over the step's
trained tokens (every assistant token weighs the same, whatever its micro-batch), then clipping and
AdamW at a warmup + cosine learning rate (model/train.lr_at). An example longer than the model's
block_size + 1 tokens is left out and counted (cutting it would cut off its end-of-turn marker).

With `lora_rank > 0` the base is frozen and only LoRA adapters train (model/lora.py); the output
holds the merged weights (so it loads wherever a pretrain artifact does) and the adapter in PEFT's
format.

Output folder: model.safetensors, config.json (the base's, plus `sft`: this run's config, counts and
losses; `data` still names the base's token files, so `evaluate` finds its held-out split),
tokenizer.json, metrics.jsonl (step, loss, val_loss on eval steps, lr, grad_norm, tokens,
tokens_per_s) and loss.png; with LoRA also adapter_config.json + adapter_model.safetensors (PEFT's
format: the folder is an adapter folder).
Runs where only torch, numpy, safetensors and tokenizers are installed."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from model.chat import ChatDataError, ChatError, marker_ids, read_chat_examples, render_chat
from model.checkpoint import CheckpointError, load_model, write_json_atomic
from model.sft_config import MICRO_BATCH_TOKENS, SFTConfig, SFTError
from model.train import Progress, SpikeWatch, lr_at, plot_losses, setup_runtime
from model.train_config import TrainConfig


@dataclass
class Example:
    ids: list[int]
    mask: list[bool]  # per token of ids: is it a training target

    @property
    def trained(self) -> int:
        return sum(self.mask[1:])


# ------------------------------------------------------------------------------------------ data

def load_examples(files: Sequence[str | Path], tokenizer, mask_prompt: bool = True) -> list[Example]:
    """Every conversation of the data files, rendered. ChatDataError (one line) on a bad file."""
    examples = []
    for path in files:
        for messages in read_chat_examples(path):
            ids, mask = render_chat(tokenizer, messages)
            if not mask_prompt:
                mask = [False] + [True] * (len(ids) - 1)
            examples.append(Example(ids, mask))
    return examples


def split_examples(examples: list[Example], val_fraction: float) -> tuple[list[Example], list[Example]]:
    """(train, val): the val examples are those with the smallest content hashes, so the split does
    not depend on file order; at least one when val_fraction > 0 and there are two or more."""
    if val_fraction <= 0 or len(examples) < 2:
        return list(examples), []
    digest = lambda e: hashlib.sha256(json.dumps(e.ids).encode()).hexdigest()  # noqa: E731
    order = sorted(range(len(examples)), key=lambda i: (digest(examples[i]), i))
    n_val = min(len(examples) - 1, max(1, round(val_fraction * len(examples))))
    val = set(order[:n_val])
    return [e for i, e in enumerate(examples) if i not in val], [examples[i] for i in sorted(val)]


def epoch_batches(examples: list[Example], batch_tokens: int, seed: int, epoch: int) -> list[list[Example]]:
    """One epoch: the examples in a seeded order, grouped until the next would pass batch_tokens."""
    order = list(range(len(examples)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    batches, current, size = [], [], 0
    for i in order:
        n = len(examples[i].ids) - 1
        if current and size + n > batch_tokens:
            batches.append(current)
            current, size = [], 0
        current.append(examples[i])
        size += n
    if current:
        batches.append(current)
    return batches


def micro_batches(batch: list[Example], max_tokens: int, pad_id: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) tensors: the batch sorted by length, cut where rows × longest would pass max_tokens,
    padded on the right; y = the next token where the mask says train, else -100."""
    batch = sorted(batch, key=lambda e: -len(e.ids))
    start = 0
    while start < len(batch):
        width = len(batch[start].ids) - 1
        rows = max(1, min(len(batch) - start, max_tokens // max(width, 1)))
        chunk = batch[start:start + rows]
        x = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        y = torch.full((len(chunk), width), -100, dtype=torch.long)
        for r, example in enumerate(chunk):
            ids = torch.tensor(example.ids, dtype=torch.long)
            keep = torch.tensor(example.mask[1:], dtype=torch.bool)
            x[r, :len(ids) - 1] = ids[:-1]
            y[r, :len(ids) - 1] = torch.where(keep, ids[1:], torch.full_like(ids[1:], -100))
        yield x, y
        start += rows


# ---------------------------------------------------------------------------------------- losses

def summed_loss(model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum of cross-entropy over the targets != -100, their number)."""
    logits, _ = model(x)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum")
    return loss, int((y != -100).sum())


@torch.no_grad()
def assistant_loss(model, examples: list[Example], pad_id: int, device, max_tokens: int, autocast=contextlib.nullcontext) -> float | None:
    """Mean loss per trained token over `examples` (None when there are none)."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in micro_batches(examples, max_tokens, pad_id):
        with autocast():
            loss, n = summed_loss(model, x.to(device), y.to(device))
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total / count if count else None


# ---------------------------------------------------------------------------------------- the loop

def fine_tune(config: SFTConfig, base: str | Path, data: Sequence[str | Path], out_dir: str | Path,
              *, progress: bool = True) -> dict:
    """Fine-tune the model at `base` (pretrain or sft artifact, checkpoint folder) on the chat
    examples of `data`, writing into `out_dir`. Returns a summary (losses, counts, speed, memory)."""
    config.check()
    out_dir = Path(out_dir)
    runtime = setup_runtime(config.device)
    device = runtime.device
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    from tokenizers import Tokenizer

    model, tokenizer_path, base_meta = load_model(base, device)
    if tokenizer_path is None:
        raise SFTError(f"{base}: no tokenizer.json beside the weights")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    pad_id = marker_ids(tokenizer)["<|endoftext|>"]  # any id: padded positions are never targets
    examples = load_examples(data, tokenizer, config.mask_prompt)
    limit = model.config.block_size + 1
    too_long = [e for e in examples if len(e.ids) > limit]
    examples = [e for e in examples if len(e.ids) <= limit and e.trained > 0]
    if not examples:
        raise SFTError(f"no example fits the model's block_size of {model.config.block_size} tokens "
                       f"({len(too_long)} too long)")
    train_set, val_set = split_examples(examples, config.val_fraction)

    torch.manual_seed(config.seed)
    lora_stats = None
    if config.lora_rank:
        from model.lora import apply_lora

        lora_stats = apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_targets)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=config.peak_lr(), betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")
    use_bf16 = device.type == "cuda"
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    micro_tokens = config.micro_batch_tokens or MICRO_BATCH_TOKENS.get(device.type, MICRO_BATCH_TOKENS["cuda"])
    micro_tokens = max(micro_tokens, limit)  # the longest example fits one micro-batch

    per_epoch = len(epoch_batches(train_set, config.batch_tokens, config.seed, 0))
    steps = config.max_steps or per_epoch * config.epochs
    schedule = TrainConfig(lr=config.peak_lr(), max_steps=steps, warmup_steps=min(config.warmup_steps, steps),
                           min_lr_ratio=config.min_lr_ratio, schedule="cosine")

    def batches() -> Iterator[list[Example]]:
        epoch = 0
        while True:
            yield from epoch_batches(train_set, config.batch_tokens, config.seed, epoch)
            epoch += 1

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"
    metrics = open(metrics_path, "w")
    bar = Progress(steps, 0, False)  # the trainer's progress bar, drawn under this stage's name
    if progress:
        bar.enabled = True
        try:
            from tqdm import tqdm

            bar.bar = tqdm(total=steps, unit="step", desc="sft", file=sys.stderr, dynamic_ncols=True,
                           mininterval=0.5 if sys.stderr.isatty() else 10.0)
        except ImportError:
            pass
    watch = SpikeWatch()
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first_val = assistant_loss(model, val_set, pad_id, device, micro_tokens, autocast)
    tokens_seen = trained_seen = 0
    timed_tokens, timed_seconds = 0, 0.0
    first_loss = last_loss = val_loss = None
    recent: list[float] = []
    source = batches()
    try:
        for step in range(1, steps + 1):
            started = time.perf_counter()
            batch = next(source)
            lr = lr_at(step, schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            parts = list(micro_batches(batch, micro_tokens, pad_id))
            n_trained = sum(int((y != -100).sum()) for _, y in parts)
            total = 0.0
            for x, y in parts:
                with autocast():
                    loss, _ = summed_loss(model, x.to(device), y.to(device))
                (loss / n_trained).backward()
                total += float(loss.detach())
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip or float("inf")))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = total / n_trained
            elapsed = time.perf_counter() - started
            step_tokens = sum(len(e.ids) - 1 for e in batch)
            tokens_seen += step_tokens
            trained_seen += n_trained
            if step > 1:  # the first step pays for warm-up
                timed_tokens += step_tokens
                timed_seconds += elapsed
            first_loss = loss_value if first_loss is None else first_loss
            last_loss = loss_value
            recent = (recent + [loss_value])[-20:]
            record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens": tokens_seen,
                      "trained_tokens": trained_seen, "tokens_per_s": step_tokens / elapsed}
            warning = watch.check(step, loss_value, grad_norm)
            if warning:
                record["warning"] = warning
                bar.write(f"warning: {warning}")
            if not math.isfinite(loss_value):
                raise SFTError(f"the loss is not finite at step {step}; lower --lr")
            if (config.eval_every and step % config.eval_every == 0) or step == steps:
                val_loss = assistant_loss(model, val_set, pad_id, device, micro_tokens, autocast)
                record["val_loss"] = val_loss
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            bar.update(step, loss_value, step_tokens / elapsed)
    finally:
        bar.close()
        metrics.close()

    memory = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "optimizer_state_bytes": sum(t.numel() * t.element_size() for s in optimizer.state.values()
                                           for t in s.values() if torch.is_tensor(t)),
              "trainable_params": sum(p.numel() for p in params)}
    if device.type == "cuda":
        memory["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
    if lora_stats is not None:
        from model.lora import merge_lora, save_peft_adapter

        adapter = save_peft_adapter(model, out_dir / "adapter", str(Path(base).resolve()), overwrite=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):  # flat: the folder is a PEFT adapter folder
            os.replace(adapter / name, out_dir / name)
        adapter.rmdir()
        merge_lora(model)
    summary = {"steps": steps, "epochs": (steps / per_epoch) if per_epoch else 0, "examples": len(examples),
               "train_examples": len(train_set), "val_examples": len(val_set), "too_long": len(too_long),
               "first_loss": first_loss, "last_loss": last_loss,
               "recent_loss": sum(recent) / len(recent) if recent else None,
               "val_loss_before": first_val, "val_loss": val_loss, "tokens_seen": tokens_seen,
               "trained_tokens": trained_seen, "tokens_per_s": timed_tokens / timed_seconds if timed_seconds else None,
               "device": str(device), "lr": config.peak_lr(), "lora": lora_stats, "memory": memory}
    meta = dict(base_meta)
    meta.pop("optimizer", None)
    meta.pop("loader", None)
    meta.update(step=steps, tokens_seen=tokens_seen,
                sft={"config": asdict(config), "base": str(Path(base).resolve()), "summary": summary})
    save_file({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()},
              str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tokenizer_path, out_dir / "tokenizer.json")
    write_json_atomic(out_dir / "config.json", meta)
    plot_losses(metrics_path, out_dir / "loss.png", title=f"sft ({'LoRA r=' + str(config.lora_rank) if config.lora_rank else 'full'})"
                                                          ": loss on assistant tokens")
    return summary


def summary_lines(summary: dict) -> list[str]:
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"
    lines = [f"sft: {summary['steps']} steps ({summary['epochs']:.1f} epochs) over {summary['train_examples']} "
             f"examples ({summary['val_examples']} held out" +
             (f", {summary['too_long']} too long, left out" if summary.get("too_long") else "") + ")",
             f"sft: loss on assistant tokens {fmt(summary['first_loss'])} at the first step → "
             f"{fmt(summary['recent_loss'])} (mean of the last steps); val {fmt(summary['val_loss_before'])} "
             f"before → {fmt(summary['val_loss'])} after"]
    lora = summary.get("lora")
    if lora:
        lines.append(f"sft: LoRA trains {lora['trainable_params']:,} of {lora['base_params']:,} parameters "
                     f"({100 * lora['trainable_fraction']:.2f}%), {lora['optimizer_bytes_saved'] / 2**20:.1f} MiB "
                     "of AdamW state saved")
    if summary.get("tokens_per_s"):
        lines.append(f"sft: {summary['tokens_per_s']:,.0f} tokens/s on {summary['device']}, peak RSS "
                     f"{summary['memory']['peak_rss_bytes'] / 2**20:,.0f} MiB")
    return lines


ERRORS = (ChatDataError, ChatError, CheckpointError, SFTError)
