"""bench/pytorch-file.ts's trainer. --update full: every tensor updated in place (an optimizer step's
memory, without gradients); --update adapter: the base is read (as a forward pass would) and only
small LoRA-shaped adapters (rank 8 per tensor) are sent. In file mode the model comes as a mapped
file and the result goes back as a file written tensor by tensor; in memory mode both travel in
the socket's payload. Reports its own peak RSS (MB) as the metric peak_rss_mb."""
import argparse
import resource

import torch

import flotilla
import flotilla.torch as ft

p = argparse.ArgumentParser()
p.add_argument("--update", choices=["full", "adapter"], required=True)
args = p.parse_args()

flotilla.init()
while flotilla.is_running():
    model = flotilla.receive(as_torch=True)
    state = ft.load_file(model.params_path) if model.params_path else model.params
    if args.update == "full":
        with torch.no_grad():
            for t in state.values():
                t.mul_(0.999).add_(0.001)
        result = state
    else:
        result = {}
        with torch.no_grad():
            for i, (name, t) in enumerate(state.items()):
                x = t.reshape(t.shape[0], -1)
                a = torch.full((8, x.shape[1]), 0.01)
                result[f"lora.{i}.A"] = a
                result[f"lora.{i}.B"] = (x @ a.T)[:, :8].contiguous() * 0  # reads the whole base tensor
    if model.params_path:
        out = flotilla.result_path()
        ft.save_file(result, out)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        flotilla.send(flotilla.FLModel(params_path=out, metrics={"peak_rss_mb": peak}))
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        flotilla.send(flotilla.FLModel(params=result, metrics={"peak_rss_mb": peak}))
