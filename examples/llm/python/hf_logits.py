"""Prints the Hugging Face model's logits for a token sequence as JSON ({"logits": [[...], ...]}):
the base model of examples/llm, optionally with a PEFT adapter folder (adapter_config.json and
adapter_model.safetensors, as the TypeScript side saves them) loaded by `peft`.

    python hf_logits.py --base ../base --tokens 1,2,3 [--adapters DIR]
"""
import argparse
import json

import hf_llama  # first: switches the hub off
import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--tokens", required=True, help="comma-separated token ids")
    p.add_argument("--adapters", help="a PEFT adapter folder to apply")
    a = p.parse_args()
    model = hf_llama.load_base(a.base)
    if a.adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, a.adapters, is_trainable=False)
        model.eval()
    ids = torch.tensor([[int(t) for t in a.tokens.split(",")]], dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    print(json.dumps({"logits": logits.tolist(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
