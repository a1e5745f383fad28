"""Pretraining a GPT on a token artifact: one config dataclass, one loop.

    python -m model.train --data <tokenize artifact> --out runs/tiny --preset tiny --max-steps 300
    torchrun --standalone --nproc_per_node 8 -m model.train --data ... --out ...   (DDP, one GPU per rank)

What a step does: `batch_tokens` tokens (all ranks together) in micro-batches of `micro_batch`
sequences; gradients accumulate over the micro-batches (DDP all-reduces only on the last one),
are clipped to `grad_clip`, and AdamW (fused on GPU; weight decay on the linear layers' matrices
only, see GPT.optimizer_groups) takes a step at the scheduled learning rate: linear warmup, then
cosine to `min_lr_ratio`·lr, or warmup-stable-decay (WSD: constant, then a linear decay over the
last `decay_fraction` of the steps). On a GPU the forward runs under bf16 autocast and the model
is compiled; on a CPU it runs in float32, eagerly, and is deterministic.

Data: TokenStream (model/data.py) gives each rank its own stripe of row groups and hands out
windows from a seeded shuffle buffer (docs/pretraining.md); a background thread prepares (and on
CUDA pins) the next step's batches while the device computes. Nothing leaves the device between
logged steps: the loss is summed there and read every `log_every` steps (every step on a CPU,
every 10th on a GPU). Randomness inside a step (dropout) is re-seeded from (seed, rank, step) at
every step, so a resumed run needs no saved RNG stream to match an uninterrupted one: `--resume
<checkpoint or pretrain artifact>` continues with bit-identical losses on a CPU, and refuses a
max_steps, lr, schedule, batch or optimizer setting other than the checkpoint's unless
`--resume-new-schedule`. `--stop-at K` ends a run early on the schedule of `--max-steps`.

Output folder: metrics.jsonl (one JSON line per logged step: step, loss, lr, grad_norm, tokens,
tokens_per_s (all ranks) and tokens_per_s_per_rank, flops_per_s and mfu per GPU (mfu null without a
known peak, e.g. on a CPU), val_loss on eval steps, eval (benchmark metrics) on
--eval-benchmark-every steps, warning when the loss or the gradient norm leaves its recent spread),
TensorBoard event files, checkpoints/step-NNNNNNN/ (latest only), the final model.safetensors +
optimizer.safetensors + config.json + tokenizer.json (see model/checkpoint.py), and loss.png
(model/train_report.py draws it).

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

from model.checkpoint import (CheckpointError, latest_checkpoint, load_training_state, save_checkpoint,
                              write_json_atomic)
from model.checkpoint import read_config as read_checkpoint_config
from model.data import EOT_TOKEN, BatchPrefetcher, DataError, TokenStream, open_token_artifact  # noqa: F401
from model.gpt import GPT, config_from_preset
from model.mfu import mfu, peak_flops
from model.train_config import (GPU_MIN_BATCH_TOKENS, MAX_NOT_FINITE_STEPS, MICRO_BATCH_TOKENS,  # noqa: F401
                                TrainConfig, TrainError, batch_size_warning, check_resume)
# the report side of training lives in model/train_report.py; re-exported for the fine-tuning loops
from model.train_report import (RECENT_LOSS_STEPS, Progress, SpikeWatch, log_scalars, plot_losses,  # noqa: F401
                                summary_lines, tensorboard_writer)

GPU_LOG_EVERY = 10  # on a GPU the loss leaves the device every N steps (a host sync), as in nanoGPT


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


# --------------------------------------------------------------------------------------- the loop

def gather_loader_states(state: dict, runtime: Runtime) -> list[dict]:
    """Every rank's loader state (rank 0 writes them all into the checkpoint)."""
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


def load_eval_benchmark(config: TrainConfig):
    """(benchmark, tokenizer-independent) read once at the start, so a bad file fails before training."""
    if not config.eval_benchmark:
        return None
    from model.benchmarks import BenchmarkError, read_benchmark

    try:
        return read_benchmark(config.eval_benchmark)
    except BenchmarkError as exc:
        raise TrainError(f"--eval-benchmark {exc}") from None


def score_during_training(model: GPT, tokenizer, benchmark) -> dict:
    """The benchmark's numeric metrics as {"<name>/<metric>": value} (nanochat's CORE-during-training)."""
    from model.evaluate import score_benchmark

    was_training = model.training
    scores = score_benchmark(model, tokenizer, benchmark, show_progress=False)
    model.train(was_training)
    return {f"{benchmark.name}/{k}": float(v) for k, v in scores.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


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
    log_every = config.log_every or (GPU_LOG_EVERY if device.type == "cuda" else 1)
    benchmark = load_eval_benchmark(config)
    warnings = [w for w in (batch_size_warning(config, device.type),) if w]

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
        check_resume(read_checkpoint_config(checkpoint).get("train", {}), config, checkpoint)
        meta = load_training_state(checkpoint, model, optimizer)
        for group in optimizer.param_groups:  # equal to the saved ones unless --resume-new-schedule
            group["betas"] = (config.beta1, config.beta2)
            group["weight_decay"] = config.weight_decay if group["weight_decay"] else 0.0
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
    tokenizer = None
    if benchmark is not None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    writer = tensorboard_writer(out_dir) if runtime.main else None
    bar = Progress(stop, start_step, progress and runtime.main)
    for warning in warnings:
        if runtime.main:
            bar.write(f"warning: {warning}")
    watch = SpikeWatch()
    metrics = open(metrics_path, "a") if runtime.main else None
    last_loss = val_loss = last_eval = None
    recent_losses: list[float] = []  # one step's loss is noisy: the summary also gives the mean of the last ones
    tokens_this_run, time_this_run = 0, 0.0
    not_finite = 0
    checkpoint_dir = out_dir / "checkpoints"
    prefetch = BatchPrefetcher(stream, accum, pin=device.type == "cuda")
    loss_sum = torch.zeros((), device=device)  # losses since the last log, summed on the device (no sync)
    interval_steps, interval_started = 0, time.perf_counter()
    try:
        for step in range(start_step + 1, stop + 1):
            torch.manual_seed(step_seed(config.seed, runtime.rank, step))
            batches, loader_state = prefetch.next()
            lr = lr_at(step, config)
            loss, grad_norm = train_step(step_model, optimizer, batches, lr=lr, grad_clip=config.grad_clip,
                                         device=device, autocast=autocast, ddp=runtime.distributed)
            loss_sum += loss
            interval_steps += 1
            tokens_seen += config.batch_tokens
            eval_now = (config.eval_every and step % config.eval_every == 0) or step == config.max_steps
            bench_now = benchmark is not None and ((config.eval_benchmark_every and step % config.eval_benchmark_every == 0)
                                                   or step == config.max_steps)
            checkpoint_now = (config.checkpoint_every and step % config.checkpoint_every == 0) or step == stop
            if not (step % log_every == 0 or eval_now or bench_now or checkpoint_now):
                continue  # nothing leaves the device this step
            # ---- a logged step: the one host sync of the interval
            if runtime.distributed:
                dist.all_reduce(loss_sum)
                loss_sum /= runtime.world_size
            loss_value, norm_value = float(loss_sum) / interval_steps, float(grad_norm)
            elapsed = time.perf_counter() - interval_started
            interval_tokens = config.batch_tokens * interval_steps
            tokens_per_s = interval_tokens / elapsed
            per_rank = tokens_per_s / runtime.world_size  # MFU is per GPU: one rank's tokens over one GPU's peak
            if step > start_step + interval_steps:  # the first interval pays for compilation and warm-up
                tokens_this_run += interval_tokens
                time_this_run += elapsed
            first_loss = loss_value if first_loss is None else first_loss
            last_loss = loss_value
            recent_losses = (recent_losses + [loss_value] * interval_steps)[-RECENT_LOSS_STEPS:]
            record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": norm_value, "tokens": tokens_seen,
                      "tokens_per_s": tokens_per_s, "tokens_per_s_per_rank": per_rank,
                      "flops_per_s": flops_per_token * per_rank, "mfu": mfu(flops_per_token, per_rank, peak)}
            if interval_steps > 1:
                record["steps_averaged"] = interval_steps
            warning = watch.check(step, loss_value, norm_value)
            if warning:
                record["warning"] = warning
                if runtime.main:
                    bar.write(f"warning: {warning}")
            not_finite = 0 if math.isfinite(loss_value) else not_finite + 1
            if not_finite >= MAX_NOT_FINITE_STEPS:  # the weights are NaN by now: stop, keep the last checkpoint
                if runtime.main:
                    metrics.write(json.dumps(record) + "\n")
                raise TrainError(f"the loss has not been finite for {not_finite} logged steps (since step "
                                 f"{step - not_finite * interval_steps + 1}); lower --lr or check the data; the last "
                                 f"checkpoint is in {checkpoint_dir}")
            if eval_now:
                val_loss = validation_loss(model, files, seq_len, micro, eot_id, runtime, config.eval_batches,
                                           autocast, seed=config.seed)
                record["val_loss"] = val_loss
            if bench_now and runtime.main:
                last_eval = record["eval"] = score_during_training(model, tokenizer, benchmark)
            if runtime.main:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                log_scalars(writer, record)
            bar.update(step, loss_value, tokens_per_s, steps=interval_steps)
            if checkpoint_now:
                states = gather_loader_states(loader_state, runtime)
                if runtime.main:
                    meta = {"step": step, "tokens_seen": tokens_seen, "train": asdict(config), "loader": states,
                            "data": {"files": [str(f.resolve()) for f in files], "eot_id": eot_id, "seq_len": seq_len},
                            "summary": {"first_loss": first_loss, "last_loss": last_loss, "val_loss": val_loss}}
                    metrics.flush()
                    save_checkpoint(checkpoint_dir, model, optimizer, meta, tokenizer_path, metrics_path)
            loss_sum.zero_()
            interval_steps, interval_started = 0, time.perf_counter()
    finally:
        prefetch.close()
        bar.close()
        if metrics is not None:
            metrics.close()
        if writer is not None:
            writer.close()

    tokens_per_s = tokens_this_run / time_this_run if time_this_run else None
    summary = {"steps": stop, "resumed_from": start_step, "first_loss": first_loss, "last_loss": last_loss,
               "recent_loss": sum(recent_losses) / len(recent_losses) if recent_losses else None,
               "val_loss": val_loss, "tokens_seen": tokens_seen, "seq_len": seq_len, "micro_batch": micro,
               "grad_accumulation": accum, "world_size": runtime.world_size, "device": str(device),
               "params": model.num_params(), "flops_per_token": flops_per_token, "tokens_per_s": tokens_per_s,
               "tokens_per_s_per_rank": tokens_per_s / runtime.world_size if tokens_per_s else None,
               "eval": last_eval, "warnings": warnings}
    summary["mfu"] = mfu(flops_per_token, summary["tokens_per_s_per_rank"], peak) if tokens_per_s else None
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
