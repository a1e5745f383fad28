"""LoRA (model/lora.py) against PEFT: the adapter we save loads with transformers + peft onto the
exported base model and gives our logits; merging gives them too; PEFT's own adapter loads into ours."""
import json
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import one_torch_thread, pattern_text, tiny_gpt, train_tokenizer  # noqa: E402,F401

from model.export import export_hf  # noqa: E402
from model.lora import (LoRAError, LoRALinear, apply_lora, load_peft_adapter, lora_state_dict,  # noqa: E402
                        merge_lora, save_peft_adapter)


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("lora") / "tokenizer.json", pattern_text(200))


def randomised(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def random_adapters(model, seed=2):
    """B is zero after apply_lora (the adapted model equals the base); give it values so the test
    can tell a loaded adapter from none."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=gen) * 0.1)


def test_lora_starts_at_the_base_model_and_trains_only_the_adapters(tokenizer_path):
    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    model = randomised(tiny_gpt(vocab))
    ids = torch.randint(0, vocab, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before, _ = model(ids)
    stats = apply_lora(model, rank=4, alpha=8, targets="q,v,down")
    with torch.no_grad():
        after, _ = model(ids)
    assert torch.equal(before, after)  # B = 0: not an approximation
    n_embd, inter = model.config.n_embd, model.config.intermediate_size
    kv = model.config.n_kv_head * model.config.head_dim
    per_layer = 4 * (n_embd + n_embd) + 4 * (n_embd + kv) + 4 * (inter + n_embd)  # q, v, down: r·(in + out)
    assert stats["lora_params"] == stats["trainable_params"] == model.config.n_layer * per_layer
    assert stats["optimizer_bytes_saved"] == 8 * (stats["base_params"] - stats["trainable_params"])
    _, loss = model(ids, ids)
    loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    assert all(n.endswith((".q_proj.lora_A.weight", ".q_proj.lora_B.weight", ".v_proj.lora_A.weight",
                           ".v_proj.lora_B.weight", ".down_proj.lora_A.weight", ".down_proj.lora_B.weight"))
               for n in trained)
    with pytest.raises(LoRAError, match="unknown LoRA target"):
        apply_lora(tiny_gpt(vocab), rank=4, targets="q,x")


@pytest.mark.parametrize("shape", [dict(n_kv_head=2, tie_embeddings=False), dict(n_kv_head=4, tie_embeddings=True)],
                         ids=["gqa-untied", "mha-tied"])
def test_peft_loads_our_adapter_with_our_logits_and_merges(tokenizer_path, tmp_path, shape):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    model = randomised(tiny_gpt(vocab, **shape))
    base = export_hf(model, tokenizer_path, tmp_path / "base")  # the base model, before any adapter
    apply_lora(model, rank=4, alpha=16, targets=("q", "k", "v", "o", "gate", "up", "down"))
    random_adapters(model)
    adapter = save_peft_adapter(model, tmp_path / "adapter", base)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 16 and config["peft_type"] == "LORA"

    ids = torch.randint(0, vocab, (3, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, _ = model(ids)
        hf = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        plain = hf(ids).logits
        peft_model = PeftModel.from_pretrained(hf, adapter).eval()
        theirs = peft_model(ids).logits
    assert (plain - ours).abs().max().item() > 1e-2  # the adapter changes the logits ...
    assert (theirs - ours).abs().max().item() <= 1e-4  # ... and peft computes ours
    # every adapter tensor was found by name (peft warns, not fails, on a missing one)
    loaded = {n for n, _ in peft_model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(lora_state_dict(model))

    with torch.no_grad():
        merged_theirs = peft_model.merge_and_unload()(ids).logits
        merge_lora(model)
        merged_ours, _ = model(ids)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(tiny_gpt(vocab, **shape).state_dict())  # a plain GPT again
    assert (merged_ours - ours).abs().max().item() <= 1e-4
    assert (merged_theirs - merged_ours).abs().max().item() <= 1e-4


def test_an_adapter_peft_made_loads_into_ours(tokenizer_path, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    model = randomised(tiny_gpt(vocab))
    base = export_hf(model, tokenizer_path, tmp_path / "base")
    hf = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(hf, LoraConfig(r=2, lora_alpha=6, target_modules=["q_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    peft_model.save_pretrained(tmp_path / "theirs")
    ids = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(3))
    stats = load_peft_adapter(model, tmp_path / "theirs")
    assert stats["lora_params"] == 2 * 2 * (2 * 64 + 2 * 64)
    with torch.no_grad():
        assert (peft_model.eval()(ids).logits - model(ids)[0]).abs().max().item() <= 1e-4
