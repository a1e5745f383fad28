"""Pretraining a GPT on a token artifact: one config dataclass, one loop.

    python -m model.train --data <tokenize artifact> --out runs/tiny --preset tiny --max-steps 300
    torchrun --standalone --nproc_per_node 8 -m model.train --data ... --out ...   (DDP, one GPU per rank)

What a step does: `batch_tokens` tokens (all ranks together) in micro-batches of `micro_batch`
sequences; gradients accumulate over the micro-batches (DDP all-reduces only on the last one),
are clipped to `grad_clip`, and AdamW (fused on GPU; no weight decay on norm gains and the
embedding, see GPT.optimizer_groups) takes a step at the scheduled learning rate: linear warmup,
then cosine to `min_lr_ratio`·lr, or warmup-stable-decay (WSD: constant, then a linear decay over
the last `decay_fraction` of the steps). On a GPU the forward runs under bf16 autocast and the
model is compiled; on a CPU it runs in float32, eagerly, and is deterministic.

Data: TokenStream (model/data.py) gives each rank its own stripe of row groups, in a seeded
order; its position is part of every checkpoint. Randomness inside a step (dropout) is re-seeded
from (seed, rank, step) at every step, so a resumed run needs no RNG stream to match an
uninterrupted one: `--resume <checkpoint or pretrain artifact>` continues with bit-identical
losses on a CPU. `--stop-at K` ends a run early on the schedule of `--max-steps` (for resuming).

Output folder: metrics.jsonl (one JSON line per step: step, loss, lr, grad_norm, tokens,
tokens_per_s, flops_per_s, mfu (null without a known peak, e.g. on a CPU), val_loss on eval
steps, warning when the loss spikes or the gradient explodes), TensorBoard event files,
checkpoints/step-NNNNNNN/ (latest only), the final model.safetensors + optimizer.safetensors +
config.json + tokenizer.json (see model/checkpoint.py), and loss.png.

Runs where only torch, numpy, pyarrow, safetensors and tokenizers are installed; tqdm,
matplotlib and tensorboard are used when present."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
import typing
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from model.checkpoint import CheckpointError, latest_checkpoint, load_training_state, save_checkpoint, write_json_atomic
from model.data import EOT_TOKEN, DataError, TokenStream, open_token_artifact
from model.gpt import GPT, config_from_preset
from model.mfu import peak_flops
from model.train_config import MAX_NOT_FINITE_STEPS, MICRO_BATCH_TOKENS, TrainConfig, TrainError

RECENT_LOSS_STEPS = 20  # the summary's "last loss" is the mean of this many final steps (one step is noisy)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of update number `step` (1-based)."""
    peak, floor = config.peak_lr(), config.peak_lr() * config.min_lr_ratio
    if config.warmup_steps and step <= config.warmup_steps:
        return peak * step / config.warmup_steps
    if config.schedule == "constant":
        return peak
    if config.schedule == "wsd":
        decay_steps = max(1, round(config.decay_fraction * config.max_steps))
        decay_start = config.max_steps - decay_steps
        if step <= decay_start:
            return peak
        return peak + (floor - peak) * min(1.0, (step - decay_start) / decay_steps)
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------- devices and ranks

@dataclass
class Runtime:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we called init_process_group (so we destroy it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(device: str) -> Runtime:
    """Ranks from torchrun's environment (or an already initialised process group) and a device."""
    owns = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"--device {device}: CUDA is not available here")
        dev = torch.device("cuda", dev.index if dev.index is not None else local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return Runtime(rank, world, local_rank, dev, owns)


def micro_batch_geometry(config: TrainConfig, seq_len: int, world_size: int, device_type: str) -> tuple[int, int]:
    """(sequences per micro-batch per rank, micro-batches per step)."""
    if config.batch_tokens % (seq_len * world_size):
        raise TrainError(f"--batch-tokens {config.batch_tokens} is not a multiple of seq_len {seq_len} × "
                         f"{world_size} rank(s)")
    rows = config.batch_tokens // (seq_len * world_size)
    if config.micro_batch:
        if rows % config.micro_batch:
            raise TrainError(f"--micro-batch {config.micro_batch} does not divide the {rows} sequences per rank and step")
        return config.micro_batch, rows // config.micro_batch
    cap = max(1, MICRO_BATCH_TOKENS.get(device_type, MICRO_BATCH_TOKENS["cuda"]) // seq_len)
    micro = max(d for d in range(1, min(rows, cap) + 1) if rows % d == 0)
    return micro, rows // micro


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7919 + step) % (2**63 - 1)


# ---------------------------------------------------------------------------------------- one step

def make_optimizer(model: GPT, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.optimizer_groups(config.weight_decay), lr=config.peak_lr(),
                             betas=(config.beta1, config.beta2), eps=1e-8, fused=device.type == "cuda")


def train_step(model, optimizer: torch.optim.Optimizer, micro_batches, *, lr: float, grad_clip: float,
               device: torch.device, autocast=contextlib.nullcontext, ddp: bool = False):
    """One optimizer step over the micro-batches [(x, y)]: mean loss, accumulated gradients (DDP
    syncs on the last micro-batch only), clipping, AdamW. Returns (mean loss of this rank, grad norm)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    n = len(micro_batches)
    total = torch.zeros((), device=device)
    for i, (x, y) in enumerate(micro_batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync = contextlib.nullcontext() if not ddp or i == n - 1 else model.no_sync()
        with sync:
            with autocast():
                _, loss = model(x, y)
            (loss / n).backward()
        total += loss.detach().float()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / n, grad_norm


@torch.no_grad()
def validation_loss(model: GPT, files, seq_len: int, batch_size: int, eot_id: int, runtime: Runtime,
                    max_batches: int, autocast=contextlib.nullcontext, seed: int = 0) -> float | None:
    """Mean loss per token over the val split (this rank's stripe, all ranks summed); None if empty."""
    stream = TokenStream(files, seq_len, batch_size, eot_id, split="val", seed=seed, rank=runtime.rank,
                         world_size=runtime.world_size, loop=False)
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=runtime.device)
    for i, (x, y) in enumerate(stream):
        if max_batches and i >= max_batches:
            break
        with autocast():
            _, loss = model(x.to(runtime.device), y.to(runtime.device))
        sums[0] += loss.double() * y.numel()
        sums[1] += y.numel()
    model.train(was_training)
    if runtime.distributed:
        dist.all_reduce(sums)
    return float(sums[0] / sums[1]) if sums[1] > 0 else None


# ----------------------------------------------------------------------------------- watching it

class SpikeWatch:
    """Running mean and deviation of the loss and grad norm; a warning when one jumps far above them."""

    def __init__(self, decay: float = 0.9, warmup: int = 10):
        self.decay, self.warmup, self.seen = decay, warmup, 0
        self.loss_mean = self.loss_var = self.norm_mean = 0.0

    def check(self, step: int, loss: float, grad_norm: float) -> str | None:
        warning = None
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            warning = f"step {step}: loss {loss:.4g}, grad norm {grad_norm:.4g} (not finite)"
        elif self.seen >= self.warmup:
            spread = max(4 * math.sqrt(self.loss_var), 0.1 * self.loss_mean)
            if loss > self.loss_mean + spread:
                warning = f"step {step}: loss spike {loss:.4f} (running mean {self.loss_mean:.4f})"
            elif grad_norm > 10 * self.norm_mean:
                warning = f"step {step}: gradient norm {grad_norm:.3g} exploded (running mean {self.norm_mean:.3g})"
        if math.isfinite(loss) and math.isfinite(grad_norm):
            if self.seen == 0:
                self.loss_mean, self.norm_mean = loss, grad_norm
            d = self.decay
            self.loss_var = d * self.loss_var + (1 - d) * (loss - self.loss_mean) ** 2
            self.loss_mean = d * self.loss_mean + (1 - d) * loss
            self.norm_mean = d * self.norm_mean + (1 - d) * grad_norm
            self.seen += 1
        return warning


class Progress:
    """tqdm on stderr when installed; otherwise a line every 10% of the steps."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.total, self.enabled, self.bar = total, enabled, None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, unit="step", desc="pretrain", file=sys.stderr,
                                dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 10.0)
            except ImportError:
                pass

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            self.bar.update(1)
        elif self.enabled and (step % max(1, self.total // 10) == 0 or step == self.total):
            print(f"pretrain: step {step}/{self.total} loss {loss:.4f} {tokens_per_s:,.0f} tok/s", file=sys.stderr)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def tensorboard_writer(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed (a bare GPU box): metrics.jsonl only
        return None
    return SummaryWriter(log_dir=str(out_dir), flush_secs=30)


def plot_losses(metrics_path: Path, png: Path, reference: float | None = None, title: str = "pretrain") -> Path | None:
    """loss.png: training loss (and its running mean) and validation loss against tokens seen."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    tokens = [r["tokens"] for r in rows]
    losses = [r["loss"] for r in rows]
    ax.plot(tokens, losses, lw=0.8, alpha=0.4, color="tab:blue", label="train loss")
    smooth, mean = [], losses[0]
    for value in losses:  # an exponential moving average, so the trend shows through batch noise
        mean = 0.9 * mean + 0.1 * value if math.isfinite(value) else mean
        smooth.append(mean)
    ax.plot(tokens, smooth, lw=1.6, color="tab:blue", label="train loss (moving average)")
    val = [(r["tokens"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val), "o-", color="tab:red", ms=4, label="val loss")
    if reference is not None and math.isfinite(reference):
        ax.axhline(reference, ls="--", color="gray", lw=1, label=f"unigram entropy {reference:.2f}")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


# --------------------------------------------------------------------------------------- the loop

def gather_loader_states(stream: TokenStream, runtime: Runtime) -> list[dict]:
    state = stream.state_dict()
    if not runtime.distributed:
        return [state]
    fields = ("epoch", "unit", "doc", "offset", "buffer", "window", "done")
    mine = torch.tensor([int(state[f]) for f in fields], dtype=torch.long,
                        device=runtime.device if dist.get_backend() == "nccl" else "cpu")
    everyone = [torch.zeros_like(mine) for _ in range(runtime.world_size)]
    dist.all_gather(everyone, mine)
    return [state | {"rank": r} | {f: int(v) for f, v in zip(fields, values.tolist())} | {"done": bool(values[-1])}
            for r, values in enumerate(everyone)]


def token_data(data) -> tuple[list[Path], Path, int, int]:
    """A tokenize artifact folder, or (token part files, tokenizer.json) → (files, tokenizer, vocab, eot id)."""
    if isinstance(data, (str, Path)):
        return open_token_artifact(data)
    files, tokenizer_path = data
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    eot_id = tokenizer.token_to_id(EOT_TOKEN)
    if eot_id is None:
        raise DataError(f"{tokenizer_path}: has no {EOT_TOKEN} token")
    return [Path(f) for f in files], Path(tokenizer_path), tokenizer.get_vocab_size(), int(eot_id)


def train(config: TrainConfig, data, out_dir: str | Path, *, progress: bool = True,
          reference_loss: float | None = None) -> dict:
    """Train per `config` on `data` (a tokenize artifact folder, or (part files, tokenizer.json)),
    writing into `out_dir`. Returns a summary: first/last/val loss, steps, tokens seen, tokens/s."""
    config.check()
    out_dir = Path(out_dir)
    runtime = setup_runtime(config.device)
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _train(config, data, out_dir, runtime, progress, reference_loss)
    finally:
        if runtime.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, data, out_dir: Path, runtime: Runtime, progress: bool,
           reference_loss: float | None) -> dict:
    files, tokenizer_path, vocab_size, eot_id = token_data(data)
    overrides = {"block_size": config.seq_len} if config.seq_len else {}
    model_config = config_from_preset(config.preset, vocab_size, **overrides)
    seq_len = model_config.block_size
    micro, accum = micro_batch_geometry(config, seq_len, runtime.world_size, runtime.device.type)
    device = runtime.device
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(config.seed)  # same initial weights on every rank
    model = GPT(model_config).to(device)
    optimizer = make_optimizer(model, config, device)
    stream = TokenStream(files, seq_len, micro, eot_id, split="train", seed=config.seed, rank=runtime.rank,
                         world_size=runtime.world_size, loop=True, shuffle_tokens=config.shuffle_tokens)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"
    start_step, tokens_seen, first_loss = 0, 0, None
    if config.resume:
        checkpoint = latest_checkpoint(config.resume)
        meta = load_training_state(checkpoint, model, optimizer)
        if len(meta["loader"]) != runtime.world_size:
            raise TrainError(f"{checkpoint}: saved with {len(meta['loader'])} rank(s); this run has "
                             f"{runtime.world_size} (the data stripes would differ)")
        stream.load_state_dict(meta["loader"][runtime.rank])
        start_step, tokens_seen = int(meta["step"]), int(meta["tokens_seen"])
        if runtime.main:
            earlier = checkpoint / "metrics.jsonl"
            lines = earlier.read_text().splitlines() if earlier.is_file() else []
            kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= start_step]
            metrics_path.write_text("".join(line + "\n" for line in kept))
            first_loss = json.loads(kept[0])["loss"] if kept else None  # the curve's, not this run's
    elif runtime.main:
        metrics_path.write_text("")
    stop = min(config.stop_at or config.max_steps, config.max_steps)
    if start_step >= stop:
        raise TrainError(f"nothing to do: the checkpoint is at step {start_step}, this run stops at {stop}")

    use_compile = config.compile == "on" or (config.compile == "auto" and device.type == "cuda")
    step_model = torch.compile(model) if use_compile else model
    if runtime.distributed:
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()

    flops_per_token = model.flops_per_token(seq_len)
    peak = peak_flops(device)
    writer = tensorboard_writer(out_dir) if runtime.main else None
    bar = Progress(stop, start_step, progress and runtime.main)
    watch = SpikeWatch()
    metrics = open(metrics_path, "a") if runtime.main else None
    last_loss = val_loss = None
    recent_losses: list[float] = []  # one step's loss is noisy: the summary also gives the mean of the last ones
    tokens_this_run, time_this_run = 0, 0.0
    not_finite = 0
    checkpoint_dir = out_dir / "checkpoints"
    try:
        for step in range(start_step + 1, stop + 1):
            started = time.perf_counter()
            torch.manual_seed(step_seed(config.seed, runtime.rank, step))
            batches = [next(stream) for _ in range(accum)]
            lr = lr_at(step, config)
            loss, grad_norm = train_step(step_model, optimizer, batches, lr=lr, grad_clip=config.grad_clip,
                                         device=device, autocast=autocast, ddp=runtime.distributed)
            if runtime.distributed:
                dist.all_reduce(loss)
                loss /= runtime.world_size
            loss_value, norm_value = float(loss), float(grad_norm)  # waits for the step to finish
            elapsed = time.perf_counter() - started
            tokens_seen += config.batch_tokens
            tokens_per_s = config.batch_tokens / elapsed
            if step > start_step + 1:  # the first step pays for compilation and warm-up
                tokens_this_run += config.batch_tokens
                time_this_run += elapsed
            first_loss = loss_value if first_loss is None else first_loss
            last_loss = loss_value
            recent_losses = (recent_losses + [loss_value])[-RECENT_LOSS_STEPS:]
            record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": norm_value, "tokens": tokens_seen,
                      "tokens_per_s": tokens_per_s, "flops_per_s": flops_per_token * tokens_per_s,
                      "mfu": flops_per_token * tokens_per_s / peak if peak else None}
            warning = watch.check(step, loss_value, norm_value)
            if warning:
                record["warning"] = warning
                if runtime.main:
                    bar.write(f"warning: {warning}")
            not_finite = 0 if math.isfinite(loss_value) else not_finite + 1
            if not_finite >= MAX_NOT_FINITE_STEPS:  # the weights are NaN by now: stop, keep the last checkpoint
                if runtime.main:
                    metrics.write(json.dumps(record) + "\n")
                raise TrainError(f"the loss has not been finite for {not_finite} steps (since step "
                                 f"{step - not_finite + 1}); lower --lr or check the data; the last checkpoint "
                                 f"is in {checkpoint_dir}")
            if (config.eval_every and step % config.eval_every == 0) or step == config.max_steps:
                val_loss = validation_loss(model, files, seq_len, micro, eot_id, runtime, config.eval_batches,
                                           autocast, seed=config.seed)
                record["val_loss"] = val_loss
            if runtime.main:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                if writer is not None:
                    for name in ("loss", "lr", "grad_norm", "tokens_per_s", "flops_per_s", "mfu", "val_loss"):
                        if record.get(name) is not None:
                            writer.add_scalar(("val/loss" if name == "val_loss" else f"train/{name}"), record[name], step)
            bar.update(step, loss_value, tokens_per_s)
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == stop:
                states = gather_loader_states(stream, runtime)
                if runtime.main:
                    meta = {"step": step, "tokens_seen": tokens_seen, "train": asdict(config), "loader": states,
                            "rng": {"torch": torch.get_rng_state().tolist(),
                                    "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()]
                                    if device.type == "cuda" else []},
                            "data": {"files": [str(f.resolve()) for f in files], "eot_id": eot_id, "seq_len": seq_len},
                            "summary": {"first_loss": first_loss, "last_loss": last_loss, "val_loss": val_loss}}
                    metrics.flush()
                    save_checkpoint(checkpoint_dir, model, optimizer, meta, tokenizer_path, metrics_path)
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
        if writer is not None:
            writer.close()

    summary = {"steps": stop, "resumed_from": start_step, "first_loss": first_loss, "last_loss": last_loss,
               "recent_loss": sum(recent_losses) / len(recent_losses) if recent_losses else None,
               "val_loss": val_loss, "tokens_seen": tokens_seen, "seq_len": seq_len, "micro_batch": micro,
               "grad_accumulation": accum, "world_size": runtime.world_size, "device": str(device),
               "params": model.num_params(), "flops_per_token": flops_per_token,
               "tokens_per_s": tokens_this_run / time_this_run if time_this_run else None}
    summary["mfu"] = flops_per_token * summary["tokens_per_s"] / peak if peak and summary["tokens_per_s"] else None
    if runtime.main:
        final = latest_checkpoint(checkpoint_dir)
        for name in ("model.safetensors", "optimizer.safetensors", "tokenizer.json"):
            _link_or_copy(final / name, out_dir / name)
        write_json_atomic(out_dir / "config.json", json.loads((final / "config.json").read_text()))
        plot_losses(metrics_path, out_dir / "loss.png", reference_loss, title=f"pretrain {config.preset}")
    return summary


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def summary_lines(summary: dict, unigram_entropy: float | None = None) -> list[str]:
    """What a person wants to read after a run (the demo prints these)."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"
    lines = [f"pretrain: {summary.get('steps')} steps, {summary.get('tokens_seen', 0):,} tokens; "
             f"loss {fmt(summary.get('first_loss'))} at the first step → {fmt(summary.get('recent_loss'))} "
             f"(mean of the last {RECENT_LOSS_STEPS} steps), val loss {fmt(summary.get('val_loss'))} nats/token"]
    if unigram_entropy is not None:
        lines.append(f"pretrain: unigram entropy of the training tokens {unigram_entropy:.4f} nats/token "
                     f"(a model that learned only token frequencies would score this)")
    if summary.get("tokens_per_s"):
        speed = f"pretrain: {summary['tokens_per_s']:,.0f} tokens/s on {summary.get('device')}"
        if summary.get("mfu"):
            speed += f", MFU {100 * summary['mfu']:.1f}%"
        else:
            speed += f", {summary['flops_per_token'] * summary['tokens_per_s'] / 1e9:.1f} GFLOP/s achieved"
        lines.append(speed)
    return lines


# -------------------------------------------------------------------------------------------- CLI

def add_config_arguments(parser: argparse.ArgumentParser, config_cls=TrainConfig) -> None:
    """One --option per dataclass field, with its type, default, help and choices."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f.metadata.get("help", "") + " [default: %(default)s]"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=f.default, help=help_text,
                                choices=f.metadata.get("choices"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", required=True, help="A tokenize artifact (token parts + tokenizer.json).")
    parser.add_argument("--out", required=True, help="Output folder (metrics, TensorBoard, checkpoints, model).")
    parser.add_argument("--unigram-entropy", action="store_true",
                        help="Also measure the unigram entropy of the training tokens (one pass over the data).")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    try:
        entropy = None
        if args.unigram_entropy:
            from model.data import unigram_entropy

            files, _, vocab_size, eot_id = open_token_artifact(args.data)
            entropy, _ = unigram_entropy(files, eot_id, vocab_size)
        summary = train(config, args.data, args.out, progress=not args.no_progress, reference_loss=entropy)
    except (DataError, CheckpointError, TrainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (the last checkpoint is in the output folder; continue with --resume)", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        for line in summary_lines(summary, entropy):
            print(line, file=sys.stderr)
        print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
