"""The training loop (model/train.py) on a GPU: bf16 autocast, torch.compile, fused AdamW, MFU in
metrics.jsonl, checkpoint and resume. One prepared run for a machine with a GPU (a few minutes):

    python benchmarks/gpu_train_check.py            # JSON into $OUT/gpu_train_check.json when $OUT is set
    python benchmarks/gpu_train_check.py --smoke    # CPU, tiny shapes: checks the script

Needs torch, numpy, pyarrow, safetensors and tokenizers only (no Prefect, no network). Data: Jane
Austen's paragraphs from tests/fixtures, tokenized by a BPE trained here (vocab 8192), copied
until there are enough tokens. It trains `--preset` (gpt2-124m) for `--steps` steps of
`--batch-tokens`, stops at half way (`--stop-at`), resumes from that checkpoint to the end, and
reports: tokens/s and MFU after warm-up (from metrics.jsonl), the loss at the start, middle and
end, whether the resumed losses match an uninterrupted run's (on a GPU they may differ in the last
bits: bf16 kernels are not bit-deterministic), and peak memory. Compare the MFU with
benchmarks/gpu_pretrain.py's (the model alone, random tokens): the gap is the loop's overhead."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gpt2-124m")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-tokens", type=int, default=131072)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--out", default=str(Path(os.environ["OUT"]) / "gpu_train_check.json") if os.environ.get("OUT") else "")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny preset, a few steps")
    args = parser.parse_args()

    import torch

    from model.train import TrainConfig, train
    from token_corpus import build_token_artifact

    if args.smoke:
        args.preset, args.steps, args.batch_tokens, args.micro_batch = "tiny", 6, 2048, 4
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        data = build_token_artifact(tmp / "tokens", parts=4, row_group_docs=1024, vocab_size=8192 if not args.smoke else 512,
                                    repeat=8 if args.smoke else 64, val_percent=3)
        build_s = time.perf_counter() - started
        common = dict(preset=args.preset, max_steps=args.steps, batch_tokens=args.batch_tokens,
                      micro_batch=args.micro_batch, warmup_steps=max(1, args.steps // 10), eval_every=0,
                      eval_batches=8, checkpoint_every=0, device=device, lr=6e-4 if not args.smoke else 3e-3)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        whole = train(TrainConfig(**common), data, tmp / "whole", progress=True)
        half = args.steps // 2
        train(TrainConfig(**common, stop_at=half), data, tmp / "first", progress=False)
        resumed = train(TrainConfig(**common, resume=str(tmp / "first")), data, tmp / "second", progress=False)
        rows = [json.loads(line) for line in (tmp / "whole" / "metrics.jsonl").read_text().splitlines()]
        again = [json.loads(line) for line in (tmp / "second" / "metrics.jsonl").read_text().splitlines()]
        timed = rows[min(len(rows) - 1, max(3, len(rows) // 5)):]  # after compilation and warm-up
        differences = [abs(a["loss"] - b["loss"]) for a, b in zip(rows, again)]
        result = {
            "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "preset": args.preset, "params": whole["params"], "batch_tokens": args.batch_tokens,
            "micro_batch": whole["micro_batch"], "grad_accumulation": whole["grad_accumulation"],
            "steps": args.steps, "data_build_s": round(build_s, 1),
            "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in timed),
            "tokens_per_s_per_rank_median": statistics.median(r["tokens_per_s_per_rank"] for r in timed),
            "mfu_median": statistics.median(r["mfu"] for r in timed) if timed[0]["mfu"] is not None else None,
            "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"],  # logged every 10 steps on a GPU
            "loss_middle": [r["loss"] for r in rows if r["step"] <= half][-1],
            "val_loss": whole["val_loss"],
            "resume_max_abs_loss_difference": max(differences), "resume_bit_identical": max(differences) == 0.0,
            "resumed_from": resumed["resumed_from"],
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
            "command": " ".join(sys.argv),
        }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    assert result["loss_last"] < result["loss_first"], "the loss did not go down"


if __name__ == "__main__":
    main()
