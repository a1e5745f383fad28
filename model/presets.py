"""Model sizes by name, torch-free so that option lists (CLI, Prefect forms) need no torch import."""

PRESETS: dict[str, dict] = {
    # 1.05M parameters in the blocks (+ vocab × 128): ~1.4k tokens per CPU-second at vocab 32768
    # (benchmarks/BENCHMARKS.md), so the loss drops visibly within minutes on 2 cores.
    "tiny": dict(n_layer=4, n_head=4, n_kv_head=4, n_embd=128, block_size=256, tie_embeddings=True),
    # 10.6M in the blocks (+ vocab × 384): a GPU in minutes, a CPU in hours.
    "small": dict(n_layer=6, n_head=6, n_kv_head=6, n_embd=384, block_size=512, tie_embeddings=True),
    # GPT-2 small's shape (85M in the blocks, tied embeddings: 124M at GPT-2's vocab) with Llama's blocks.
    "gpt2-124m": dict(n_layer=12, n_head=12, n_kv_head=12, n_embd=768, block_size=1024, tie_embeddings=True),
}
