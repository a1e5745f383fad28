"""A decoder-only transformer, Llama's architecture, in one readable file (after nanoGPT's model.py).

    token ids ─▶ embed_tokens ─▶ n_layer × Block ─▶ norm ─▶ lm_head ─▶ logits
    Block:  x = x + o_proj(attention(RoPE(q_proj(rms(x))), RoPE(k_proj(rms(x))), v_proj(rms(x))))
            x = x + down_proj(silu(gate_proj(rms(x))) * up_proj(rms(x)))          (SwiGLU)

Parameter names mirror transformers' LlamaForCausalLM (minus its `model.` prefix), RMSNorm runs in
float32 and RoPE uses HF's rotate_half (non-interleaved) layout, so exporting to Llama is a rename
and gives the same logits. Options Llama cannot express: `qk_norm` (RMSNorm on queries and keys per
head, as OLMo 2 / Qwen3 do; `llama_compatible()` is then False). PyTorch only: this file must run on
a bare GPU box (no Prefect, nothing from pipeline/).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from model.presets import PRESETS  # noqa: F401 - sizes live in a torch-free module (the CLI reads them)


@dataclass
class GPTConfig:
    vocab_size: int = 32768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 12  # < n_head: grouped-query attention (each kv head serves n_head // n_kv_head q heads)
    n_embd: int = 768
    intermediate_size: int = 0  # SwiGLU hidden width; 0 → Llama's rule from n_embd (see __post_init__)
    block_size: int = 1024  # longest sequence (the RoPE tables are this long)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False  # lm_head shares embed_tokens' matrix
    qk_norm: bool = False  # RMSNorm on q and k per head before RoPE (not expressible in Llama)
    dropout: float = 0.0  # attention-probability and residual dropout, training only

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_kv_head < 1 or self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.intermediate_size == 0:
            # Llama's FeedForward rule: 2/3 of 4·n_embd (SwiGLU has three matrices instead of two,
            # so this keeps the MLP's parameters at 8·n_embd²), rounded up to a multiple of 256.
            hidden = int(2 * 4 * self.n_embd / 3)
            self.intermediate_size = 256 * math.ceil(hidden / 256)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def llama_compatible(self) -> bool:
        """True when transformers' LlamaForCausalLM can hold this model exactly (export allowed)."""
        return not self.qk_norm

    def llama_config_kwargs(self) -> dict:
        """Keyword arguments for `transformers.LlamaConfig` describing the same network."""
        if not self.llama_compatible():
            raise ValueError("qk_norm=True has no Llama equivalent; this model cannot be exported to Llama")
        return dict(
            vocab_size=self.vocab_size, hidden_size=self.n_embd, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.n_layer, num_attention_heads=self.n_head,
            num_key_value_heads=self.n_kv_head, head_dim=self.head_dim,
            max_position_embeddings=self.block_size, rms_norm_eps=self.norm_eps,
            rope_theta=self.rope_theta, tie_word_embeddings=self.tie_embeddings,
            hidden_act="silu", attention_bias=False, mlp_bias=False,
        )


# Presets: sizes only; vocab_size always comes from the tokenizer (config_from_preset). Tied
# embeddings throughout, as GPT-2 and Llama 3.2 1B: at these sizes the vocab × n_embd matrix is a
# large share of all parameters (80% of tiny's at vocab 32768), so one copy instead of two halves it.


def config_from_preset(name: str, vocab_size: int, **overrides) -> GPTConfig:
    """A preset's sizes with the tokenizer's vocab_size; overrides win (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    fields = dict(PRESETS[name], vocab_size=vocab_size)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "n_head" in overrides and "n_kv_head" not in overrides:
        overrides["n_kv_head"] = overrides["n_head"]  # a changed head count keeps plain multi-head attention
    fields.update(overrides)
    return GPTConfig(**fields)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (as HF Llama does, so bf16 activations keep precision)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (length, head_dim), float32, in HF's layout: the frequencies repeat once
    (cat(f, f)), pairing dimension i with i + head_dim/2 (rotate_half), not neighbours (interleaved)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (i, i + head_dim/2) pair of x (B, H, T, head_dim) by its position's angle."""
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Keys and values of every layer for the tokens seen so far, for incremental decoding.

    Preallocated to max_len; `length` is how many positions are filled. GPT.forward(idx, cache=...)
    treats idx as the next tokens (positions length .. length+T-1), reads and extends every layer's
    slice, then advances `length` by T."""

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, max_len: int, head_dim: int,
                 device=None, dtype=None):
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new k, v (B, n_kv_head, T, head_dim) of one layer; return all keys/values so far."""
        end = self.length + k.size(2)
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def reset(self) -> None:
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.q_proj = nn.Linear(config.n_embd, config.n_head * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.n_embd, config.n_kv_head * config.head_dim, bias=False)
        self.v_proj = nn.Linear(config.n_embd, config.n_kv_head * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.n_head * config.head_dim, config.n_embd, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(config.head_dim, config.norm_eps)
            self.k_norm = RMSNorm(config.head_dim, config.norm_eps)
        self.qk_norm = config.qk_norm
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0):
        B, T, _ = x.shape
        # (B, T, heads·head_dim) → (B, heads, T, head_dim)
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.update(layer, k, v)
            k, v = k.to(q.dtype), v.to(q.dtype)  # a float32 cache under bf16 autocast
        if self.n_kv_head != self.n_head:
            # GQA: each kv head serves n_rep consecutive query heads (HF's repeat_kv = repeat_interleave).
            n_rep = self.n_head // self.n_kv_head
            k = k.repeat_interleave(n_rep, dim=1)
            v = v.repeat_interleave(n_rep, dim=1)

        dropout_p = self.dropout if self.training else 0.0
        if start == 0:
            # Training, or a cache's first chunk: plain causal attention (flash kernels on GPU).
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        elif T == 1:
            # One new token sees every cached position: no mask at all.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        else:
            # T new tokens at offset `start`: query i (position start+i) sees keys 0 .. start+i.
            # (is_causal would align the triangle to the top-left corner, which is wrong here.)
            key_pos = torch.arange(start + T, device=q.device)
            query_pos = torch.arange(start, start + T, device=q.device)
            mask = key_pos[None, :] <= query_pos[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.o_proj(y))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.self_attn = CausalSelfAttention(config)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        if config.tie_embeddings:
            self.lm_head = None  # logits use embed_tokens.weight: no lm_head.weight in the state_dict
        else:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # RoPE tables: buffers (they follow .to(device)) but not saved (persistent=False): rebuilt
        # from the config. Computed in float32, cast to the activations' dtype where used.
        cos, sin = rope_tables(config.head_dim, config.block_size, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """The one place weights are initialised (GPT-2's scheme, as nanoGPT):
        - every Linear and the embedding: normal(0, 0.02) (0.02 ≈ 1/sqrt(3·768): small enough that the
          first logits are near-uniform, so the initial loss is ≈ ln(vocab_size));
        - the two projections that write into the residual stream (o_proj, down_proj): std
          0.02 / sqrt(2·n_layer), because 2·n_layer of them add up along the residual path and the
          sum's variance would otherwise grow with depth;
        - RMSNorm gains: 1. There are no biases.
        Also refills the RoPE tables, so a model built on the meta device, then `to_empty(device=...)`
        (FSDP-style), is complete after this call."""
        std = 0.02
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        for block in self.layers:
            for residual in (block.self_attn.o_proj, block.mlp.down_proj):
                nn.init.normal_(residual.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))
        cos, sin = rope_tables(self.config.head_dim, self.config.block_size, self.config.rope_theta)
        with torch.no_grad():
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids → logits (B, T, vocab_size) and, with targets (B, T), the mean cross
        entropy over targets != -100 (computed in float32). With a cache, idx continues the cached
        sequence and the cache is extended."""
        logits = F.linear(self.hidden_states(idx, cache), self.head_weight())
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The last layer's output after the final norm, (B, T, n_embd): forward() without the LM head
        (for scoring only some positions, or computing the loss in chunks). Extends the cache like forward."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size={self.config.block_size}")
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"the KV cache holds {cache.max_len} positions; {start + T} requested")
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        x = self.embed_tokens(idx)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.length += T
        return self.norm(x)

    def head_weight(self) -> torch.Tensor:
        """The LM head's (vocab_size, n_embd) matrix: embed_tokens.weight when tied."""
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def new_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        """An empty KVCache for up to max_len positions (default and limit: block_size), on the model's
        device and dtype unless given."""
        max_len = self.config.block_size if max_len is None else max_len
        if max_len > self.config.block_size:
            raise ValueError(f"max_len={max_len} is longer than block_size={self.config.block_size}")
        weight = self.embed_tokens.weight
        return KVCache(self.config.n_layer, batch_size, self.config.n_kv_head, max_len, self.config.head_dim,
                       device=device or weight.device, dtype=dtype or weight.dtype)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, a tied matrix counted once. non_embedding=True leaves out the input embedding
        table (a lookup, no FLOPs) but keeps the LM head's matrix (a matmul per token, tied or not):
        the N of the 6·N FLOPs rule."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.lm_head is not None:
            n -= self.embed_tokens.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at sequence length seq_len, for MFU.

        6·N for the weight matmuls (2 per multiply-add forward, 4 backward; N = num_params(non_embedding
        =True)), plus attention's q·kᵀ and probs·v: 2·2·seq_len·n_embd per token per layer forward, ×3
        with backward = 12·n_layer·n_embd·seq_len. As in PaLM's appendix B, nanoGPT and nanochat the full
        T×T score matrix is counted (not halved for the causal mask), so figures compare with theirs."""
        cfg = self.config
        attention = 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * seq_len
        return 6 * self.num_params(non_embedding=True) + attention

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay on the matrices of the linear layers; none on norm gains
        (1-D) and none on the embedding table (also when tied as the LM head). nanoGPT decays every
        >= 2-D parameter, its embedding included; we follow OLMo 2, which turned weight decay off
        for embeddings as one of its stability changes: an embedding row is updated only when its
        token occurs, so decay applied at every step mostly shrinks the rows of rare tokens.
        benchmarks/bench_vs_reference.py gives the reference trainer the same groups."""
        embedding = self.embed_tokens.weight
        decay = [p for p in self.parameters() if p.dim() >= 2 and p is not embedding]
        no_decay = [p for p in self.parameters() if p.dim() < 2 or p is embedding]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
