"""model/gpt.py: masking, RoPE, parity with transformers' Llama, the KV cache, counts, options."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.export import hf_name
from model.gpt import GPT, PRESETS, GPTConfig, apply_rope, config_from_preset, rope_tables

VOCAB = 300


def small_config(**overrides) -> GPTConfig:
    fields = dict(vocab_size=VOCAB, n_layer=2, n_head=4, n_kv_head=4, n_embd=64, block_size=64)
    fields.update(overrides)
    return GPTConfig(**fields)


def make_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(small_config(**overrides)).eval()
    # Norm gains start at 1; perturb them so a wrong mapping of any weight shows up in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("overrides", [{}, {"n_kv_head": 2, "qk_norm": True}])
def test_future_tokens_never_change_earlier_logits(overrides):
    model = make_model(**overrides)
    x = tokens(2, 48)
    changed = x.clone()
    t = 30
    changed[:, t] = (changed[:, t] + 1) % VOCAB
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(changed)
    assert torch.allclose(a[:, :t], b[:, :t], atol=1e-6, rtol=0)
    assert (a[:, t:] - b[:, t:]).abs().amax(dim=-1).min() > 1e-4  # every later position sees the change


def test_rope_scores_depend_only_on_position_difference():
    head_dim, theta = 32, 10000.0
    cos, sin = rope_tables(head_dim, 512, theta)
    q = torch.randn(head_dim, generator=torch.Generator().manual_seed(0))
    k = torch.randn(head_dim, generator=torch.Generator().manual_seed(1))

    def score(m: int, n: int) -> float:
        return float(apply_rope(q, cos[m], sin[m]) @ apply_rope(k, cos[n], sin[n]))

    for offset in (0, 7, 100, 400):
        assert score(5 + offset, 2 + offset) == pytest.approx(score(5, 2), abs=1e-4)
        assert score(2 + offset, 9 + offset) == pytest.approx(score(2, 9), abs=1e-4)
    assert abs(score(5, 2) - score(5, 3)) > 1e-3  # and it does depend on the difference
    # a rotation: norms are kept
    assert float(apply_rope(q, cos[77], sin[77]).norm()) == pytest.approx(float(q.norm()), rel=1e-5)


def to_llama(model: GPT, attn_implementation: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**model.config.llama_config_kwargs())
    config._attn_implementation = attn_implementation
    llama = LlamaForCausalLM(config).eval()
    # Export is a rename: our names are Llama's without the `model.` prefix.
    state = {hf_name(k): v for k, v in model.state_dict().items()}
    missing, unexpected = llama.load_state_dict(state, strict=False)
    assert not unexpected
    if model.config.tie_embeddings:
        assert missing == ["lm_head.weight"]
        assert llama.lm_head.weight.data_ptr() == llama.model.embed_tokens.weight.data_ptr()
    else:
        assert not missing
    return llama


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("overrides", [
    {},  # Llama defaults: multi-head attention, untied head
    {"n_kv_head": 2, "tie_embeddings": True, "rope_theta": 500.0},  # GQA, tied, another RoPE base
    {"n_kv_head": 1, "intermediate_size": 96, "norm_eps": 1e-6},  # multi-query, odd MLP width
])
def test_same_logits_as_transformers_llama(attn, overrides):
    model = make_model(**overrides)
    llama = to_llama(model, attn)
    x = tokens(2, 64)
    with torch.no_grad():
        ours, loss = model(x[:, :-1], targets=x[:, 1:])
        out = llama(x[:, :-1], labels=x[:, :-1])  # transformers shifts labels itself
    assert (ours - out.logits).abs().max() <= 1e-4
    # HF drops the last position (no next label); ours has its target, so compare the shared part.
    shared = F.cross_entropy(ours[:, :-1].reshape(-1, VOCAB), x[:, 1:-1].reshape(-1))
    assert float(shared) == pytest.approx(float(out.loss), abs=1e-5)
    assert float(loss) == pytest.approx(float(F.cross_entropy(ours.reshape(-1, VOCAB), x[:, 1:].reshape(-1))), abs=1e-6)


@pytest.mark.parametrize("overrides", [{}, {"n_kv_head": 2, "qk_norm": True, "tie_embeddings": True}])
def test_chunked_forward_through_cache_equals_one_pass(overrides):
    model = make_model(**overrides)
    x = tokens(3, 60)
    with torch.no_grad():
        full, _ = model(x)
        cache = model.new_cache(batch_size=3, max_len=60)
        pieces = []
        for start, end in [(0, 13), (13, 14), (14, 15), (15, 40), (40, 41), (41, 60)]:
            logits, _ = model(x[:, start:end], cache=cache)
            pieces.append(logits)
            assert cache.length == end
    assert (torch.cat(pieces, dim=1) - full).abs().max() <= 1e-5


def test_cache_under_bf16_autocast_matches_uncached():
    model = make_model(n_kv_head=2)
    x = tokens(2, 20)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full, _ = model(x)
        cache = model.new_cache(batch_size=2, max_len=20)  # float32 cache, bf16 activations
        pieces = [model(x[:, a:b], cache=cache)[0] for a, b in [(0, 8), (8, 9), (9, 20)]]
    assert (torch.cat(pieces, dim=1).float() - full.float()).abs().max() <= 0.05


def test_cache_and_sequence_limits_are_clear_errors():
    model = make_model()
    with pytest.raises(ValueError, match="block_size=64"):
        model(tokens(1, 65))
    cache = model.new_cache(batch_size=1, max_len=10)
    model(tokens(1, 8), cache=cache)
    with pytest.raises(ValueError, match="holds 10 positions"):
        model(tokens(1, 3), cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model.new_cache(batch_size=1, max_len=65)


def hand_count(c: GPTConfig) -> tuple[int, int]:
    """(all parameters, non-embedding parameters), written out from the architecture."""
    d, kv, ff = c.n_embd, c.n_kv_head * c.head_dim, c.intermediate_size
    attention = d * d + 2 * d * kv + d * d  # q, k, v, o
    mlp = 3 * d * ff  # gate, up, down
    layer = attention + mlp + 2 * d  # two norm gains
    body = c.n_layer * layer + d  # final norm
    head = c.vocab_size * d
    total = body + head + (0 if c.tie_embeddings else head)
    return total, body + head


@pytest.mark.parametrize("overrides", [{}, {"n_kv_head": 2, "tie_embeddings": True}, {"qk_norm": True}])
def test_num_params_and_flops_match_a_hand_count(overrides):
    config = small_config(**{"n_embd": 96, "n_head": 6, "n_kv_head": 6, **overrides})
    model = GPT(config)
    total, non_embedding = hand_count(config)
    if config.qk_norm:
        extra = 2 * config.head_dim * config.n_layer
        total, non_embedding = total + extra, non_embedding + extra
    assert config.intermediate_size == 256  # Llama's rule: 2/3·4·96 = 256, a multiple of 256
    assert model.num_params() == total == sum(p.numel() for p in model.state_dict().values())
    assert model.num_params(non_embedding=True) == non_embedding
    T = 50
    assert model.flops_per_token(T) == 6 * non_embedding + 12 * config.n_layer * config.n_embd * T


def test_flops_per_token_counts_the_matmuls_of_a_forward_pass():
    """6N is 3× the forward's 2·(multiply-adds); count the forward's multiply-adds by hooking every
    matmul (Linear layers and the two attention products) and compare."""
    config = small_config(n_kv_head=2)
    model = GPT(config)
    T = 32
    macs = 0

    def count_linear(module, inputs, output):
        nonlocal macs
        macs += inputs[0].numel() // inputs[0].size(-1) * module.in_features * module.out_features

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(count_linear)
    with torch.no_grad():
        model(tokens(1, T))
    macs += T * config.n_embd * config.vocab_size  # the (tied or not) head runs as F.linear
    macs += config.n_layer * 2 * T * T * config.n_embd  # q·kᵀ and probs·v over the full T×T square
    # N also holds the norms' gains (elementwise, no matmul), as in nanoGPT's count: 6 FLOPs each.
    gains = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    assert model.flops_per_token(T) - 6 * gains == 3 * 2 * macs / T


def test_gpt2_124m_preset_has_gpt2_small_shape():
    with torch.device("meta"):
        model = GPT(config_from_preset("gpt2-124m", vocab_size=50257))
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.intermediate_size) == (12, 12, 768, 1024, 2048)
    # GPT-2 small: 85M in the blocks + 38.6M tied embedding = 124M
    assert model.num_params() - 50257 * 768 == pytest.approx(85e6, rel=0.01)
    assert model.num_params() == pytest.approx(124e6, rel=0.01)


def test_presets_take_vocab_from_the_tokenizer_and_overrides():
    assert set(PRESETS) >= {"tiny", "small", "gpt2-124m"}
    config = config_from_preset("tiny", vocab_size=4096, n_head=2, dropout=0.1, block_size=None)
    assert config.vocab_size == 4096 and config.n_head == config.n_kv_head == 2
    assert config.block_size == PRESETS["tiny"]["block_size"] and config.dropout == 0.1
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        config_from_preset("huge", vocab_size=100)
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        GPTConfig(n_head=4, n_kv_head=3, n_embd=64)


def test_qk_norm_changes_the_output_and_is_not_llama_exportable():
    plain = make_model()
    normed = make_model(qk_norm=True)
    shared = {k: v for k, v in normed.state_dict().items() if "q_norm" not in k and "k_norm" not in k}
    assert shared.keys() == plain.state_dict().keys()
    plain.load_state_dict(shared)  # same weights; only the q/k norms differ
    x = tokens(1, 32)
    with torch.no_grad():
        assert (plain(x)[0] - normed(x)[0]).abs().max() > 1e-3
    assert plain.config.llama_compatible() and not normed.config.llama_compatible()
    with pytest.raises(ValueError, match="qk_norm"):
        normed.config.llama_config_kwargs()
    assert "layers.0.self_attn.q_norm.weight" in normed.state_dict()


def test_loss_ignores_minus_100_targets():
    model = make_model()
    x = tokens(2, 20)
    targets = tokens(2, 20, seed=2)
    targets[:, :7] = -100
    with torch.no_grad():
        logits, loss = model(x, targets=targets)
    expected = F.cross_entropy(logits[:, 7:].reshape(-1, VOCAB), targets[:, 7:].reshape(-1))
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)


def test_optimizer_groups_decay_only_matrices_of_linear_layers():
    for tie in (False, True):
        model = make_model(tie_embeddings=tie, qk_norm=True)
        decay, no_decay = model.optimizer_groups(weight_decay=0.1)
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        names = {id(p): n for n, p in model.named_parameters()}
        decayed = {names[id(p)] for p in decay["params"]}
        kept = {names[id(p)] for p in no_decay["params"]}
        assert decayed.isdisjoint(kept) and decayed | kept == set(names.values())
        assert "embed_tokens.weight" in kept and "norm.weight" in kept
        assert "layers.1.self_attn.k_norm.weight" in kept and "layers.0.input_layernorm.weight" in kept
        assert all(n.endswith("_proj.weight") or n == "lm_head.weight" for n in decayed)
        assert ("lm_head.weight" in decayed) == (not tie)
        torch.optim.AdamW(model.optimizer_groups(0.1), lr=1e-3)  # a valid AdamW argument


def test_initialisation_scales_residual_projections_and_starts_near_uniform():
    torch.manual_seed(0)
    config = small_config(n_layer=8, n_embd=128, vocab_size=2000)
    model = GPT(config)
    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    assert float(model.layers[3].self_attn.o_proj.weight.detach().std()) == pytest.approx(residual_std, rel=0.05)
    assert float(model.layers[3].mlp.down_proj.weight.detach().std()) == pytest.approx(residual_std, rel=0.05)
    assert float(model.layers[3].self_attn.q_proj.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
    x = torch.randint(0, 2000, (4, 64))
    y = torch.randint(0, 2000, (4, 64))
    with torch.no_grad():
        _, loss = model(x, targets=y)
    assert float(loss) == pytest.approx(math.log(2000), abs=0.1)


def test_dropout_is_active_only_in_training():
    model = make_model(dropout=0.2)
    x = tokens(1, 16)
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])


def test_hidden_states_times_head_weight_are_the_logits():
    for tie in (False, True):
        model = make_model(tie_embeddings=tie)
        x = tokens(2, 24)
        with torch.no_grad():
            logits, _ = model(x)
            hidden = model.hidden_states(x)
        assert hidden.shape == (2, 24, model.config.n_embd)
        assert torch.allclose(hidden @ model.head_weight().T, logits, atol=1e-5)
        assert (model.head_weight() is model.embed_tokens.weight) == tie


def test_meta_device_model_is_complete_after_to_empty_and_init_weights():
    config = small_config(n_kv_head=2)
    reference = GPT(config)
    torch.manual_seed(3)
    reference.init_weights()  # (the constructor's Linear layers draw their own default init first)
    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device="cpu")
    torch.manual_seed(3)
    model.init_weights()
    assert torch.equal(model.rope_cos, reference.rope_cos) and torch.equal(model.rope_sin, reference.rope_sin)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
