"""A PyTorch site of the LLM example: the base model as a Hugging Face LlamaForCausalLM (hf_llama.py),
fine-tuned with LoRA through `peft` (--mode peft) or in full (--mode sft), as a Flotilla client.

It speaks the same protocol as the tfjs trainer (src/trainers.ts), so both kinds of site can share one
global model: PEFT sends only the adapters, named as PEFT saves them
(base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight ...); SFT sends every base weight
(HF names; the tied lm_head is not sent). On a train task the site scores the global model on its own
validation split first (metric val_loss), then trains --local-steps AdamW steps (betas 0.9/0.95, global
gradient norm clipped to 1, as src/optim.ts). The data is the tfjs sites' split, tokenized by
src/export-data.ts. Runs with --standalone for local-only training (no Flotilla).
"""
import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile

import hf_llama  # first: switches the hub off
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.dirname(HERE)


def load_data(a: argparse.Namespace, site_index: int) -> dict:
    """A site's examples from the TypeScript side (same tokenizer, template and split as the tfjs sites)."""
    node = os.environ.get("FLOTILLA_NODE") or shutil.which("node")
    if not node:
        raise RuntimeError("node is not on PATH: the data is tokenized by examples/llm/src/export-data.ts")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "data.json")
        cmd = [node, "--import", "tsx", os.path.join(EXAMPLE, "src", "export-data.ts"), "--site-index", str(site_index),
               "--seed", str(a.seed), "--val-count", str(a.val_count), "--max-train", str(a.max_train), "--ctx", str(a.ctx), "--out", out]
        r = subprocess.run(cmd, cwd=EXAMPLE, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"export-data.ts failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
        with open(out, encoding="utf8") as f:
            return json.load(f)


def make_batch(examples: list, max_t: int):
    """src/instruct.ts makeBatch: right-padded to a multiple of 32, targets scored from the response on."""
    longest = max(len(e["ids"]) - 1 for e in examples)
    t = min(max_t, math.ceil(longest / 32) * 32)
    x = torch.zeros((len(examples), t), dtype=torch.long)
    y = torch.zeros((len(examples), t), dtype=torch.long)
    m = torch.zeros((len(examples), t), dtype=torch.float32)
    for i, e in enumerate(examples):
        ids, n = e["ids"], min(len(e["ids"]) - 1, t)
        x[i, :n] = torch.tensor(ids[:n])
        y[i, :n] = torch.tensor(ids[1 : n + 1])
        m[i, max(e["promptLen"] - 1, 0) : n] = 1
    return x, y, m


def masked_loss(model, x, y, m) -> torch.Tensor:
    logits = model(input_ids=x).logits
    nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    m = m.reshape(-1)
    return (nll * m).sum() / m.sum().clamp(min=1)


def evaluate(model, examples: list, max_t: int, batch: int = 16) -> tuple:
    """Token-weighted mean response loss (src/finetune.ts evaluate)."""
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch):
            x, y, m = make_batch(examples[i : i + batch], max_t)
            n = int(m.sum().item())
            if n == 0:
                continue
            total += masked_loss(model, x, y, m).item() * n
            tokens += n
    return (total / tokens if tokens else float("nan")), tokens


class Sampler:
    """Batches without replacement within an epoch, reshuffled every epoch (src/instruct.ts BatchSampler)."""

    def __init__(self, examples: list, batch: int, seed: int):
        if not examples:
            raise ValueError("no training examples: every prompt of this split is longer than --ctx allows")
        self.examples, self.batch, self.rng, self.order, self.pos = examples, batch, random.Random(seed), [], 0

    def next(self) -> list:
        out = []
        while len(out) < self.batch:
            if self.pos >= len(self.order):
                self.order = list(range(len(self.examples)))
                self.rng.shuffle(self.order)
                self.pos = 0
            out.append(self.examples[self.order[self.pos]])
            self.pos += 1
        return out


class Site:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        torch.manual_seed(a.seed + a.site_index)
        self.data = load_data(a, a.site_index)
        # standalone runs: train on the union of these sites' training data, score each site's validation split
        self.sites = [self.data] + [load_data(a, i) for i in a.sites if i != a.site_index]
        if len(self.sites) > 1:
            self.data = {**self.data, "train": [e for d in self.sites for e in d["train"]]}
        self.max_t = self.data["ctx"]
        model = hf_llama.load_base(a.base)
        if a.mode == "peft":
            from peft import LoraConfig, get_peft_model

            cfg = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=hf_llama.LORA_TARGETS,
                             bias="none", task_type="CAUSAL_LM")
            model = get_peft_model(model, cfg)
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
        self.sampler = Sampler(self.data["train"], a.batch, a.seed + a.site_index + 17)

    def outgoing(self) -> dict:
        if self.a.mode == "peft":
            from peft import get_peft_model_state_dict

            return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}
        sd = self.model.state_dict()
        skip = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        return {k: v.detach().clone().contiguous() for k, v in sd.items() if k not in skip and not k.endswith("inv_freq")}

    def incoming(self, params: dict) -> None:
        if not params:
            return
        if self.a.mode == "peft":
            from peft import set_peft_model_state_dict

            expected = set(self.outgoing())
            if set(params) != expected:
                missing, extra = sorted(expected - set(params)), sorted(set(params) - expected)
                raise ValueError(f"adapters: missing {missing[:3]}, unexpected {extra[:3]} (rank/targets differ from the global model?)")
            set_peft_model_state_dict(self.model, {k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items()})
        else:
            with torch.no_grad():
                hf_llama.load_state(self.model, dict(params))

    def train(self) -> tuple:
        self.model.train()
        total, tokens = 0.0, 0
        for _ in range(self.a.local_steps):
            x, y, m = make_batch(self.sampler.next(), self.max_t)
            self.opt.zero_grad()
            loss = masked_loss(self.model, x, y, m)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            total += loss.item()
            tokens += int(m.sum().item())
        return total / self.a.local_steps, tokens


def run_federated(site: Site) -> None:
    import flotilla

    flotilla.init()
    while flotilla.is_running():
        task = flotilla.receive(as_torch=True)
        if task is None:
            break
        site.incoming(task.params)
        if flotilla.is_train():
            val_loss, val_tokens = evaluate(site.model, site.data["val"], site.max_t)
            train_loss, train_tokens = site.train()
            rnd = task.current_round
            print(f"round {rnd}: global val_loss {val_loss:.4f}, {site.a.local_steps} steps, train_loss {train_loss:.4f}", flush=True)
            flotilla.log("train_loss", train_loss, step=rnd)
            flotilla.log("val_loss", val_loss, step=rnd)
            metrics = {"val_loss": val_loss, "val_tokens": val_tokens, "train_loss": train_loss, "train_tokens": train_tokens}
            meta = {"NUM_STEPS_CURRENT_ROUND": site.a.local_steps, "site": flotilla.site_name(), "data": site.data["name"], "framework": "pytorch"}
            flotilla.send(flotilla.FLModel(params=site.outgoing(), metrics=metrics, meta=meta))
        elif flotilla.is_evaluate():
            val_loss, val_tokens = evaluate(site.model, site.data["val"], site.max_t)
            flotilla.send(flotilla.FLModel(metrics={"val_loss": val_loss, "val_tokens": val_tokens}))
        else:
            flotilla.send(flotilla.FLModel(params=site.outgoing()))


def run_standalone(site: Site, rounds: int) -> None:
    """Training without federation (local-only, or centralized with --sites): one JSON line per round with
    the validation loss on each site's split, keyed by data set name."""
    for r in range(rounds):
        train_loss, _ = site.train()
        val = {d["name"]: evaluate(site.model, d["val"], site.max_t)[0] for d in site.sites}
        print(json.dumps({"round": r + 1, "train_loss": train_loss, "val_loss": val}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["peft", "sft"], required=True)
    p.add_argument("--site-index", type=int, default=0)
    p.add_argument("--base", default=os.path.join(EXAMPLE, "base"))
    p.add_argument("--local-steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--alpha", type=float, default=8)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-count", type=int, default=32)
    p.add_argument("--max-train", type=int, default=900)
    p.add_argument("--ctx", type=int, default=0, help="sequence length (0: the base model context)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sites", default="", help="standalone: comma-separated site indexes whose data is pooled (centralized)")
    p.add_argument("--standalone", type=int, metavar="ROUNDS", help="train locally for ROUNDS rounds, no Flotilla")
    a = p.parse_args()
    a.sites = [int(i) for i in a.sites.split(",") if i != ""]
    if a.lr is None:
        a.lr = 1e-2 if a.mode == "peft" else 1.5e-3
    torch.set_num_threads(a.threads)
    site = Site(a)
    if a.standalone is not None:
        run_standalone(site, a.standalone)
    else:
        run_federated(site)


if __name__ == "__main__":
    sys.exit(main())
