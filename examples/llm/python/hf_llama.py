"""The example's base model (examples/llm/base) as a Hugging Face `LlamaForCausalLM`, offline.

The committed model already uses HF parameter names and layout, so loading it is: a `LlamaConfig` from
base/config.json (written from the model's shapes), the tensors from model.safetensors (read with PyPI's
`safetensors`), `load_state_dict`. Nothing is downloaded: the hub is switched off before `transformers`
is imported (this module must be imported first), and the tokenizer is the example's own (data is
tokenized by the TypeScript side, export-data.ts).
"""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_config(base_dir: str) -> LlamaConfig:
    with open(os.path.join(base_dir, "config.json"), encoding="utf8") as f:
        c = json.load(f)
    # eager attention: sdpa needs torch >= 2.1; no biases, SiLU MLP (the tfjs model's architecture)
    return LlamaConfig(
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"],
        max_position_embeddings=c["max_position_embeddings"],
        rms_norm_eps=c["rms_norm_eps"],
        rope_theta=c["rope_theta"],
        tie_word_embeddings=c["tie_word_embeddings"],
        hidden_act="silu",
        attention_bias=False,
        attn_implementation="eager",
    )


def read_tensors(path: str) -> dict:
    out = {}
    with safe_open(path, framework="pt") as f:
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out


def load_state(model: LlamaForCausalLM, tensors: dict) -> None:
    """Loads base weights (float32 in memory); with tied embeddings lm_head.weight is the embedding."""
    tensors = {k: v.to(torch.float32) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    allowed = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = [k for k in missing if k not in allowed and not k.endswith("rotary_emb.inv_freq")]
    if missing or unexpected:
        raise ValueError(f"base model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()


def load_base(base_dir: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(load_config(base_dir))
    load_state(model, read_tensors(os.path.join(base_dir, "model.safetensors")))
    model.eval()
    return model
