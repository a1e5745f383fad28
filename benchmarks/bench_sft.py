"""sft speed and memory: full fine-tuning against LoRA, at the same shapes, on the same data.

    .venv/bin/python benchmarks/bench_sft.py --model <pretrain artifact> [--steps 30] [--ranks 0 8] [--device cpu]

Each setting runs in its own process (peak RSS is per process), `cpu_threads=1` on a CPU, on
data/align/instructions.jsonl with the same batch (4,096 tokens per step, seed 0). Reports tokens/s
(steps after the first), peak RSS (CPU) or peak CUDA memory allocated (GPU), the AdamW state held,
and trainable parameters. Writes benchmarks/sft_results.json."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "align" / "instructions.jsonl"


def one(model: str, rank: int, steps: int, device: str, out: str) -> dict:
    sys.path.insert(0, str(REPO))
    from model.sft import fine_tune
    from model.sft_config import SFTConfig

    config = SFTConfig(max_steps=steps, lora_rank=rank, eval_every=0, val_fraction=0.0, device=device,
                       cpu_threads=1 if device == "cpu" else 0)
    summary = fine_tune(config, model, [DATA], out, progress=False)
    return {"lora_rank": rank, "steps": steps, "device": summary["device"], "tokens_per_s": summary["tokens_per_s"],
            **summary["memory"], "last_loss": summary["last_loss"],
            "optimizer_bytes_saved": (summary["lora"] or {}).get("optimizer_bytes_saved", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--ranks", type=int, nargs="+", default=[0, 8])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="/tmp/bench-sft")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.model, args.one, args.steps, args.device, f"{args.out}/r{args.one}")))
        return
    results = []
    for rank in args.ranks:
        done = subprocess.run([sys.executable, __file__, "--model", args.model, "--steps", str(args.steps), "--device",
                               args.device, "--out", args.out, "--one", str(rank)], capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    path = REPO / "benchmarks" / f"sft_results_{args.device.split(':')[0]}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(path)


if __name__ == "__main__":
    main()
