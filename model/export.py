"""Export to a Hugging Face folder that transformers loads with no custom code.

    AutoModelForCausalLM.from_pretrained(folder)   → LlamaForCausalLM with our weights
    AutoTokenizer.from_pretrained(folder)          → PreTrainedTokenizerFast over our tokenizer.json

Our parameter names are Llama's minus the `model.` prefix (model/gpt.py), RoPE uses the same
rotate_half layout and RMSNorm the same float32 computation, so the export is a rename and the
logits agree (tests/test_export.py). <|endoftext|> is end of text and, as in GPT-2, the beginning-
of-sequence token too: it is what the model saw before every document during training (lm-eval
uses the BOS token as the context of an empty prompt). Options Llama cannot express (qk_norm) are
refused with ExportError.

When the tokenizer has the chat markers, the folder also carries the chat template (model/chat.py's
CHAT_TEMPLATE, as `chat_template.jinja` and in `tokenizer_config.json`) and `generation_config.json`
lists <|assistant_end|> and <|endoftext|> as `eos_token_id`, so transformers' generate and the
OpenAI-compatible servers (`transformers serve`, vLLM) render chats as sft trained and stop at the
end of the assistant's turn. `export_peft` writes an sft artifact's LoRA adapter in PEFT's format
beside an HF export of its base model.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from model.chat import ASSISTANT_END, CHAT_MARKERS, CHAT_TEMPLATE
from model.special_tokens import EOT_TOKEN, PAD_TOKEN
from model.checkpoint import replace_folder


class ExportError(ValueError):
    """The model or the destination cannot be exported to; one line, for the user."""


def llama_config(config, eot_id: int, pad_id: int | None, dtype: str = "float32") -> dict:
    if config.qk_norm:
        raise ExportError("qk_norm=True (RMSNorm on queries and keys) has no Llama equivalent; "
                          "this model cannot be exported to the Hugging Face Llama format")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.n_embd // config.n_head,
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,  # transformers < 5 reads this ...
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},  # ... and 5 this
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "pad_token_id": pad_id,
        "initializer_range": 0.02,
        "use_cache": True,
        "dtype": dtype,
        "torch_dtype": dtype,
    }


def hf_name(name: str) -> str:
    """Our parameter name → transformers' Llama name: the `model.` prefix, except the LM head."""
    return name if name.startswith("lm_head.") else f"model.{name}"


def hf_state_dict(model, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Our state_dict under transformers' names (lm_head stays; tied models have none)."""
    return {hf_name(name): tensor.detach().to("cpu", dtype).contiguous().clone()
            for name, tensor in model.state_dict().items()}


def llama_model(model, attn_implementation: str = "sdpa"):
    """transformers' LlamaForCausalLM with this model's sizes and (shared) weights, in memory: the
    reference the benchmarks time ours against. Tied models have no lm_head to load."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**model.config.llama_config_kwargs())
    config._attn_implementation = attn_implementation
    llama = LlamaForCausalLM(config)
    llama.load_state_dict({hf_name(k): v for k, v in model.state_dict().items()}, strict=False)
    return llama


def export_hf(model, tokenizer_path: str | Path, output: str | Path, dtype: str = "float32",
              overwrite: bool = False) -> Path:
    """Write config.json, model.safetensors, the tokenizer files and generation_config.json into
    `output` (built in a temporary folder beside it, then renamed into place)."""
    from tokenizers import Tokenizer

    output = Path(output)
    if output.exists() and not (overwrite or (output.is_dir() and not any(output.iterdir()))):
        raise ExportError(f"{output}: already exists (choose a new folder, or --overwrite)")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise ExportError(f"unknown dtype {dtype!r} (float32, bfloat16, float16)")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    eot_id, pad_id = tokenizer.token_to_id(EOT_TOKEN), tokenizer.token_to_id(PAD_TOKEN)
    if eot_id is None:
        raise ExportError(f"{tokenizer_path}: has no {EOT_TOKEN} token")
    if tokenizer.get_vocab_size() != model.config.vocab_size:
        raise ExportError(f"{tokenizer_path}: {tokenizer.get_vocab_size()} tokens, but the model has "
                          f"vocab_size={model.config.vocab_size}")
    config = llama_config(model.config, eot_id, pad_id, dtype)

    with replace_folder(output) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(hf_state_dict(model, torch_dtype), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
        special = {"bos_token": EOT_TOKEN, "eos_token": EOT_TOKEN}
        if pad_id is not None:
            special["pad_token"] = PAD_TOKEN
        (tmp / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
        tokenizer_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "model_max_length": model.config.block_size,
            "add_bos_token": False,  # trained without one: a document starts right after the previous <|endoftext|>
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
        }
        stop_ids = [eot_id]
        chat_ids = [tokenizer.token_to_id(marker) for marker in CHAT_MARKERS]
        if None not in chat_ids:
            # The chat template sft trains with (model/chat.py), for apply_chat_template and the
            # servers built on it; a turn ends at <|assistant_end|>, so generation stops there too.
            tokenizer_config["chat_template"] = CHAT_TEMPLATE
            (tmp / "chat_template.jinja").write_text(CHAT_TEMPLATE)
            stop_ids = [tokenizer.token_to_id(ASSISTANT_END), eot_id]
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        generation = {"bos_token_id": eot_id, "eos_token_id": stop_ids if len(stop_ids) > 1 else eot_id,
                      "pad_token_id": pad_id, "do_sample": True, "temperature": 0.8, "top_k": 50, "max_new_tokens": 128}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return output


def export_peft(artifact: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """An sft artifact trained with LoRA → `output/` holding its adapter (adapter_config.json,
    adapter_model.safetensors) and `output/base/`, the HF export of the model it was trained from,
    which adapter_config.json names as base_model_name_or_path:

        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("out/base"), "out")
        vllm serve out/base --enable-lora --lora-modules chat=out
    """
    from model.checkpoint import CheckpointError, load_model, read_config

    artifact, output = Path(artifact), Path(output)
    adapter = artifact / "adapter_config.json"
    if not adapter.is_file() or not (artifact / "adapter_model.safetensors").is_file():
        raise ExportError(f"{artifact}: no LoRA adapter here (adapter_config.json; sft writes one with --lora-rank)")
    if output.exists() and not (overwrite or (output.is_dir() and not any(output.iterdir()))):
        raise ExportError(f"{output}: already exists (choose a new folder, or --overwrite)")
    meta = read_config(artifact)
    base = (meta.get("sft") or {}).get("base") or meta.get("base")  # sft's, or dpo's and classify's
    try:
        model, tokenizer_path, _ = load_model(base or "", "cpu")
    except CheckpointError as exc:
        raise ExportError(f"{artifact}: its base model {base} cannot be loaded ({exc})") from None
    with replace_folder(output) as tmp:
        export_hf(model, tokenizer_path, tmp / "base")
        config = json.loads(adapter.read_text())
        config["base_model_name_or_path"] = str((output / "base").resolve())
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        shutil.copyfile(artifact / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
    return output
