"""What a person watches while a model trains, kept beside the loop (model/train.py) so that the
loop reads as a loop: the spike watch, the progress bar, TensorBoard, loss.png and the summary
lines. Used by pretraining and by the fine-tuning stages (model/sft.py, classify, dpo).

tqdm, matplotlib and tensorboard are used when installed; without them training still runs
(metrics.jsonl is the record)."""
from __future__ import annotations

import json
import math
import statistics
import sys
from collections import deque
from pathlib import Path

RECENT_LOSS_STEPS = 20  # the summary's "last loss" is the mean of this many final steps (one step is noisy)


class SpikeWatch:
    """A warning when the loss or the gradient norm jumps far outside its *recent spread*.

    A fixed margin (say 10% above the running mean) fires on ordinary small-batch noise, which
    makes the warning noise itself. Here the reference is the median of the last `window` logged
    values and their spread the median absolute deviation (×1.4826: a normal distribution's
    standard deviation), both robust to the spikes they look for; a value is a spike when it lies
    more than `threshold` spreads above the median. The gradient norm is judged on a log scale
    (it varies by factors, not by amounts). Values falling fast (early training) are below the
    median and never warn. Not-finite values always warn."""

    def __init__(self, window: int = 50, threshold: float = 8.0, min_history: int = 20):
        self.threshold, self.min_history = threshold, min_history
        self.losses: deque[float] = deque(maxlen=window)
        self.log_norms: deque[float] = deque(maxlen=window)

    def _outlier(self, value: float, history: deque) -> tuple[float, float] | None:
        """(median, spread) when `value` is a spike against `history`, else None."""
        if len(history) < self.min_history:
            return None
        median = statistics.median(history)
        spread = 1.4826 * statistics.median(abs(v - median) for v in history)
        if spread > 0 and value > median + self.threshold * spread:
            return median, spread
        return None

    def check(self, step: int, loss: float, grad_norm: float) -> str | None:
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            return f"step {step}: loss {loss:.4g}, grad norm {grad_norm:.4g} (not finite)"
        warning = None
        log_norm = math.log(max(grad_norm, 1e-12))
        if (found := self._outlier(loss, self.losses)) is not None:
            median, spread = found
            warning = (f"step {step}: loss spike {loss:.4f} (recent median {median:.4f}, "
                       f"{(loss - median) / spread:.0f}x the recent spread {spread:.3f})")
        elif (found := self._outlier(log_norm, self.log_norms)) is not None:
            median, _ = found
            warning = f"step {step}: gradient norm {grad_norm:.3g} exploded (recent median {math.exp(median):.3g})"
        self.losses.append(loss)
        self.log_norms.append(log_norm)
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

    def update(self, step: int, loss: float, tokens_per_s: float, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            self.bar.update(steps)
        elif self.enabled and (step % max(1, self.total // 10) < steps or step == self.total):
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


def log_scalars(writer, record: dict) -> None:
    """One metrics.jsonl record into TensorBoard: train/*, val/loss and eval/<benchmark metric>."""
    if writer is None:
        return
    step = record["step"]
    for name in ("loss", "lr", "grad_norm", "tokens_per_s", "tokens_per_s_per_rank", "flops_per_s", "mfu"):
        if record.get(name) is not None:
            writer.add_scalar(f"train/{name}", record[name], step)
    if record.get("val_loss") is not None:
        writer.add_scalar("val/loss", record["val_loss"], step)
    for name, value in (record.get("eval") or {}).items():
        writer.add_scalar(f"eval/{name}", value, step)


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
        if summary.get("world_size", 1) > 1:
            speed += f" ({summary['tokens_per_s_per_rank']:,.0f} per rank × {summary['world_size']})"
        if summary.get("mfu"):
            speed += f", MFU {100 * summary['mfu']:.1f}%"
        else:
            speed += f", {summary['flops_per_token'] * summary['tokens_per_s'] / 1e9:.1f} GFLOP/s achieved"
        lines.append(speed)
    for name, metrics in (summary.get("eval") or {}).items():
        lines.append(f"pretrain: {name} at the last step: " +
                     ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    for warning in summary.get("warnings", []):
        lines.append(f"pretrain: warning: {warning}")
    return lines
