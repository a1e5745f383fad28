"""LoRA against full fine-tuning at the same shapes: trainable parameters, the AdamW state and
gradients actually allocated, and the process's peak memory, for each model preset.

    .venv/bin/python benchmarks/bench_lora.py                     # tiny, small, gpt2-124m; writes lora_results.json
    .venv/bin/python benchmarks/bench_lora.py --presets tiny --steps 3

Each configuration runs in its own process (so the peak RSS is its own): the preset at vocab
32,768, one token batch of --batch × --seq-len, --steps AdamW steps of the causal-LM loss. The
optimizer and gradient bytes are summed from the tensors torch holds after the last step (not a
formula); model/lora.py's lora_stats gives the formula beside them. CPU, one thread.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = Path(__file__).resolve().parent / "lora_results.json"


def measure(preset: str, rank: int, targets: str, vocab: int, batch: int, seq_len: int, steps: int) -> dict:
    import torch

    from model.gpt import GPT, config_from_preset
    from model.lora import apply_lora, lora_stats

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(config_from_preset(preset, vocab))
    base_params = model.num_params()
    stats = apply_lora(model, rank, 2 * rank, targets) if rank else lora_stats(model, base_params)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, vocab, (batch, seq_len + 1))
    started = time.perf_counter()
    for _ in range(steps):
        _, loss = model(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad(set_to_none=False)  # keep the gradients allocated, to count them
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    state_bytes = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                      if torch.is_tensor(v) and v.dim() > 0)
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    return {"preset": preset, "lora_rank": rank, "targets": targets if rank else "", "vocab": vocab,
            "params": base_params, "trainable_params": sum(p.numel() for p in params),
            "optimizer_state_bytes": state_bytes, "gradient_bytes": grad_bytes,
            "formula_optimizer_bytes": stats["optimizer_bytes"],
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "tokens_per_s": steps * batch * seq_len / seconds, "batch": batch, "seq_len": seq_len, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small,gpt2-124m")
    parser.add_argument("--ranks", default="0,8", help="LoRA ranks (0: full fine-tuning)")
    parser.add_argument("--targets", default="q,k,v,o")
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one configuration, JSON on stdout
    args = parser.parse_args()
    if args.one:
        preset, rank = args.one.split(":")
        print(json.dumps(measure(preset, int(rank), args.targets, args.vocab, args.batch, args.seq_len, args.steps)))
        return
    results = []
    for preset in args.presets.split(","):
        for rank in map(int, args.ranks.split(",")):
            done = subprocess.run([sys.executable, __file__, "--one", f"{preset}:{rank}", "--targets", args.targets,
                                   "--vocab", str(args.vocab), "--batch", str(args.batch), "--seq-len", str(args.seq_len),
                                   "--steps", str(args.steps)], capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(row)
            print(f"{preset:10s} rank {rank:2d}: trainable {row['trainable_params']:>12,} of {row['params']:>12,}; "
                  f"AdamW state {row['optimizer_state_bytes'] / 2**20:8.2f} MiB, gradients "
                  f"{row['gradient_bytes'] / 2**20:8.2f} MiB, peak RSS {row['peak_rss_bytes'] / 2**20:7.0f} MiB, "
                  f"{row['tokens_per_s']:8.0f} tok/s", file=sys.stderr)
    command = "benchmarks/bench_lora.py " + " ".join(sys.argv[1:])
    OUT.write_text(json.dumps({"command": command.strip(), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
