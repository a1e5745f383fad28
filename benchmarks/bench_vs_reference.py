"""Does the pretrain stage learn as well per token as a reference trainer? Same token artifact,
same network shape, steps, batch, learning rate, schedule and AdamW groups; validation loss on
the same val split, computed by one function for both.

    .venv/bin/python benchmarks/bench_vs_reference.py --data <tokenize artifact> --label sample-tiny \
        --preset tiny --steps 700 --batch-tokens 2048 --lr 1e-3
    .venv/bin/python benchmarks/bench_vs_reference.py --data <artifact> --label sweep --models ours \
        --lr 1e-3 2e-3 3e-3 --batch-tokens 2048 4096          # a grid, ours only (the demo's knobs)

ours: the `pretrain` stage run through pipeline.runner.run_stage (model/train.py, our GPT, our
loader with its default shuffle buffer), into `--store`.

reference: transformers' LlamaForCausalLM with the same sizes (its own initialisation, SDPA
attention, use_cache=False) trained by a plain nanoGPT-style loop written here: the train split
read into memory in stored order, cut into windows of seq_len+1 tokens with stride seq_len,
the windows shuffled each epoch (numpy, seed 0), `batch_tokens / seq_len` windows a step in one
micro-batch; AdamW(betas 0.9/0.95, eps 1e-8) with weight decay on the >= 2-D weights except the
embedding; linear warmup then cosine to min_lr_ratio, as nanoGPT's get_lr; gradient clipping at 1.

Validation, both models: every window (seq_len+1, stride seq_len) of the val split in stored
order, mean cross-entropy per target token. Results (one record per model and setting, with the
wall time and the exact command) are merged into `--out` under `--label`. One thread each
(torch.set_num_threads(1)); the models run one after the other."""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = ROOT / "benchmarks" / "reference_results.json"


def windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """(n, seq_len + 1) windows with stride seq_len: every token but the first is a target once."""
    n = (len(tokens) - 1) // seq_len
    index = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)
    return tokens[index]


@torch.no_grad()
def val_loss(logits_of, val_windows: np.ndarray, batch: int = 16) -> float:
    """Mean cross-entropy per target token over all val windows."""
    total, count = 0.0, 0
    for i in range(0, len(val_windows), batch):
        w = torch.from_numpy(val_windows[i:i + batch].astype(np.int64))
        logits = logits_of(w[:, :-1]).float()
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
        count += w[:, 1:].numel()
    return total / count


def run_ours(args, data: Path, lr: float, batch_tokens: int, store: Path) -> dict:
    from model.checkpoint import load_model
    from model.train_config import TrainConfig
    from pipeline.runner import RunOptions, run_stage
    from pipeline.stages import get_stage
    from storage.store import ArtifactStore

    config = TrainConfig(preset=args.preset, max_steps=args.steps, batch_tokens=batch_tokens, lr=lr,
                         warmup_steps=args.warmup, min_lr_ratio=args.min_lr_ratio, eval_every=0, eval_batches=0,
                         checkpoint_every=0, device="cpu", cpu_threads=1, seed=0,
                         **({"seq_len": args.seq_len} if args.seq_len else {}))
    started = time.perf_counter()
    result = run_stage(get_stage("pretrain"), [data], config, ArtifactStore(store), RunOptions(workers=1, progress=False))
    elapsed = time.perf_counter() - started
    model, _, meta = load_model(result.path)
    train = result.manifest["stats"]["train"]
    return {"model": "ours", "artifact": str(result.path), "cached": result.cached, "params": train["params"],
            "seq_len": train["seq_len"], "stage_val_loss": train["val_loss"], "recent_loss": train["recent_loss"],
            "tokens_per_s": train["tokens_per_s"], "wall_s": None if result.cached else round(elapsed, 1),
            "val_loss": None, "_logits": lambda x: model(x)[0]}


def lr_at(step: int, peak: float, warmup: int, steps: int, min_ratio: float) -> float:
    """nanoGPT's get_lr, for 1-based steps: linear warmup, then cosine down to min_ratio · peak."""
    if step <= warmup:
        return peak * step / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * min_ratio + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - peak * min_ratio)


def run_reference(args, data: Path, lr: float, batch_tokens: int, seq_len: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from model.data import open_token_artifact
    from model.evaluate import read_split_tokens
    from model.gpt import config_from_preset

    files, _, vocab_size, eot = open_token_artifact(data)
    ours_config = config_from_preset(args.preset, vocab_size, block_size=seq_len)
    config = LlamaConfig(**ours_config.llama_config_kwargs(), use_cache=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    embedding = model.model.embed_tokens.weight
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2 and p is not embedding], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2 or p is embedding], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)
    train = windows(read_split_tokens(files, "train", eot), seq_len)
    rows = batch_tokens // seq_len
    rng = np.random.default_rng(0)
    order, cursor = rng.permutation(len(train)), 0
    model.train()
    started = time.perf_counter()
    losses = []
    for step in range(1, args.steps + 1):
        if cursor + rows > len(order):  # a new epoch: a new shuffle
            order, cursor = rng.permutation(len(train)), 0
        batch = torch.from_numpy(train[order[cursor:cursor + rows]].astype(np.int64))
        cursor += rows
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr, args.warmup, args.steps, args.min_lr_ratio)
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    elapsed = time.perf_counter() - started
    model.eval()
    return {"model": "reference (transformers LlamaForCausalLM, nanoGPT-style loop)",
            "params": sum(p.numel() for p in model.parameters()), "seq_len": seq_len,
            "recent_loss": float(np.mean(losses[-20:])), "tokens_per_s": args.steps * batch_tokens / elapsed,
            "wall_s": round(elapsed, 1), "val_loss": None, "_logits": lambda x: model(input_ids=x).logits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a tokenize artifact")
    parser.add_argument("--label", required=True, help="name of this comparison in the results file")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seq-len", type=int, default=0, help="0: the preset's block_size")
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch-tokens", type=int, nargs="+", default=[2048])
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--min-lr-ratio", type=float, default=0.1)
    parser.add_argument("--models", default="ours,reference", help="comma list of: ours, reference")
    parser.add_argument("--store", type=Path, default=None, help="artifact store for our runs (default: a temp one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from model.data import open_token_artifact
    from model.evaluate import read_split_tokens
    from model.gpt import config_from_preset

    files, _, vocab_size, eot = open_token_artifact(args.data)
    seq_len = args.seq_len or config_from_preset(args.preset, vocab_size).block_size
    val = windows(read_split_tokens(files, "val", eot), seq_len)
    manifest = json.loads((args.data / "manifest.json").read_text()) if (args.data / "manifest.json").is_file() else {}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    tmp = tempfile.TemporaryDirectory()
    store = args.store or Path(tmp.name)
    records = []
    for batch_tokens in args.batch_tokens:
        for lr in args.lr:
            for name in models:
                run = run_ours(args, args.data, lr, batch_tokens, store) if name == "ours" else \
                    run_reference(args, args.data, lr, batch_tokens, seq_len)
                run["val_loss"] = val_loss(run.pop("_logits"), val)
                run |= {"lr": lr, "batch_tokens": batch_tokens, "steps": args.steps}
                records.append(run)
                print(json.dumps(run), flush=True)
    pairs = {}
    for r in records:
        pairs.setdefault((r["lr"], r["batch_tokens"]), {})[r["model"].split(" ")[0]] = r["val_loss"]
    gaps = [{"lr": lr, "batch_tokens": b, "ours_minus_reference": v["ours"] - v["reference"]}
            for (lr, b), v in pairs.items() if "ours" in v and "reference" in v]
    entry = {
        "command": ".venv/bin/python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "data": {"artifact": str(args.data), "vocab_size": vocab_size, "splits": manifest.get("stats", {}).get("splits"),
                 "val_windows": len(val), "val_tokens_scored": int(len(val) * seq_len)},
        "preset": args.preset, "seq_len": seq_len, "steps": args.steps, "warmup": args.warmup,
        "min_lr_ratio": args.min_lr_ratio, "runs": records, "gaps": gaps,
        "torch": torch.__version__, "python": platform.python_version(), "threads": 1,
    }
    for gap in gaps:
        print(f"{args.label}: lr {gap['lr']:g}, {gap['batch_tokens']} tokens/step: ours - reference = "
              f"{gap['ours_minus_reference']:+.3f} nats (goal <= +0.05)")
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.label] = entry
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} [{args.label}]")


if __name__ == "__main__":
    main()
