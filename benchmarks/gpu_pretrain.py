"""GPU pretraining speed: our GPT (`gpt2-124m` preset) against transformers' LlamaForCausalLM, same shapes.

Self-contained for a bare GPU box (Python 3.12, torch 2.11+, transformers; no Prefect, no network, no
dataset: the batches are random tokens, which cost a training step exactly what real ones do). From
the repository it imports only model/ (model.gpt, model.mfu, model.export), finding it by its own
path (no PYTHONPATH needed):

    python benchmarks/gpu_pretrain.py                           # ~3-5 min on one H100/H200
    python benchmarks/gpu_pretrain.py --batch 16 --models ours  # smaller GPU, ours only
    python benchmarks/gpu_pretrain.py --smoke                   # CPU, tiny shapes, 3 steps

The JSON goes to --out, by default gpu_pretrain.json in $OUT when that is set (the device
runner's output folder), else in the current folder.

One step = forward + loss + backward + fused AdamW step + zero_grad, bf16 autocast (weights and
optimizer state float32, as in nanoGPT), torch.compile'd model, context 1024. Each model gets
warm-up steps (compilation happens there), then --steps timed steps between two synchronisations.
tokens/s = batch × seq_len × steps / time; MFU = tokens/s × GPT.flops_per_token(seq_len) / the
device's peak dense bf16 FLOP/s (model/mfu.py's table by device name; unknown device → achieved
TFLOP/s only). Both models are the same network with the same FLOPs per token. Peak memory is
torch.cuda.max_memory_allocated over that model's run.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from model.export import llama_model  # noqa: E402
from model.gpt import GPT, config_from_preset  # noqa: E402
from model.mfu import peak_flops  # noqa: E402


def param_groups(named_params, embedding, weight_decay: float) -> list[dict]:
    """Decay on linear layers' matrices only (GPT.optimizer_groups' rule, usable for both models)."""
    params = [p for _, p in named_params]
    return [
        {"params": [p for p in params if p.dim() >= 2 and p is not embedding], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2 or p is embedding], "weight_decay": 0.0},
    ]


def run_one(name: str, args, config, device: torch.device) -> dict:
    torch.manual_seed(0)
    ours = GPT(config)
    if name == "ours":
        model = ours
        groups = ours.optimizer_groups(0.1)
    else:
        model = llama_model(ours)
        model.config.use_cache = False  # otherwise every training forward builds a KV cache
        groups = param_groups(model.named_parameters(), model.model.embed_tokens.weight, 0.1)
    flops_per_token = ours.flops_per_token(args.seq_len)
    n_params = ours.num_params()
    del ours
    model.to(device).train()
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=fused)
    compiled = torch.compile(model, mode=args.compile_mode) if args.compile else model

    if name == "ours":
        def loss_of(x, y):
            return compiled(x, targets=y)[1]
    else:
        def loss_of(x, y):
            return compiled(input_ids=x, labels=y, shift_labels=y, use_cache=False).loss  # y is already shifted

    autocast_dtype = torch.bfloat16
    generator = torch.Generator(device="cpu").manual_seed(1)
    tokens = torch.randint(0, config.vocab_size, (4, args.batch, args.seq_len + 1), generator=generator)
    pool = [(xy[:, :-1].contiguous().to(device), xy[:, 1:].contiguous().to(device)) for xy in tokens]

    def step(i: int) -> torch.Tensor:
        x, y = pool[i % len(pool)]
        with torch.autocast(device.type, dtype=autocast_dtype):
            loss = loss_of(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    first_loss = float(step(0))
    for i in range(1, args.warmup):
        step(i)
    sync()
    warmup_s = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(args.steps):
        loss = step(i)
    sync()
    elapsed = time.perf_counter() - start
    last_loss = float(loss)

    tokens_per_s = args.batch * args.seq_len * args.steps / elapsed
    achieved = tokens_per_s * flops_per_token
    peak = peak_flops(device)
    result = {
        "model": name, "parameters": n_params, "tokens_per_s": tokens_per_s, "step_ms": 1000 * elapsed / args.steps,
        "achieved_tflops": achieved / 1e12, "mfu": achieved / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "warmup_s": warmup_s, "first_loss": first_loss, "last_loss": last_loss,
    }
    return result


def release(device: torch.device) -> None:
    """Free the last model's memory and compiled graphs before the next one runs."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gpt2-124m")
    parser.add_argument("--vocab", type=int, default=32768, help="the train-tokenizer stage's default")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step (no accumulation)")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--models", default="ours,llama", help="comma list of: ours, llama")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, 3 steps: checks the script runs")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_pretrain.json")
    args = parser.parse_args()
    overrides = {}
    if args.smoke:
        args.device, args.batch, args.seq_len, args.warmup, args.steps, args.compile = "cpu", 2, 64, 1, 3, False
        args.vocab = 512
        overrides = dict(n_layer=2, n_head=2, n_kv_head=2, n_embd=64, block_size=64)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_pretrain: no CUDA device visible (use --smoke to check the script on a CPU)")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = config_from_preset(args.preset, vocab_size=args.vocab, **overrides)
    if args.seq_len > config.block_size:
        sys.exit(f"gpu_pretrain: --seq-len {args.seq_len} exceeds the preset's block_size {config.block_size}")

    with torch.device("meta"):  # counts only: no memory, no init work
        flops_per_token = GPT(config).flops_per_token(args.seq_len)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := set(models) - {"ours", "llama"}:
        sys.exit(f"gpu_pretrain: unknown --models {sorted(unknown)}; choose from ours, llama")
    if "llama" in models:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("gpu_pretrain: transformers is not installed; measuring ours only", file=sys.stderr)
            models.remove("llama")

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = peak_flops(device)
    print(f"{device_name}; torch {torch.__version__}; preset {args.preset} {config}; "
          f"batch {args.batch} x {args.seq_len}, bf16 autocast, compile={args.compile}")
    rows = []
    for name in models:
        rows.append(run_one(name, args, config, device))
        release(device)
        r = rows[-1]
        print(f"  {name}: {r['tokens_per_s']:.0f} tokens/s, loss {r['first_loss']:.4f} → {r['last_loss']:.4f}",
              flush=True)

    print(f"{'model':8} {'tokens/s':>10} {'step ms':>8} {'TFLOP/s':>8} {'MFU':>7} {'peak GiB':>9}")
    for r in rows:
        mfu = f"{100 * r['mfu']:6.1f}%" if r["mfu"] is not None else "    n/a"
        mem = f"{r['peak_memory_gib']:9.1f}" if r["peak_memory_gib"] is not None else "      n/a"
        print(f"{r['model']:8} {r['tokens_per_s']:10.0f} {r['step_ms']:8.1f} {r['achieved_tflops']:8.1f} {mfu} {mem}")
    if len(rows) == 2:
        print(f"ours / transformers Llama: {rows[0]['tokens_per_s'] / rows[1]['tokens_per_s']:.2f}x")
    if peak is None:
        print(f"(no peak bf16 FLOP/s known for {device_name!r}: MFU not computed; see model/mfu.py)")

    try:
        import transformers
        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = None
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "device": device_name, "peak_bf16_flops": peak, "torch": torch.__version__,
        "cuda": torch.version.cuda, "transformers": transformers_version, "python": platform.python_version(),
        "preset": args.preset, "config": vars(config), "batch": args.batch, "seq_len": args.seq_len,
        "warmup_steps": args.warmup, "timed_steps": args.steps, "compile": args.compile, "compile_mode": args.compile_mode, "dtype": "bf16 autocast",
        "flops_per_token": flops_per_token, "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
