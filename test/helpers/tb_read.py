"""Reads TensorBoard event files with TensorBoard's own reader; prints {run: {"scalars": {tag: [[step, value]]}, "texts": {tag: [[step, text]]}}}."""
import json
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

logdir = sys.argv[1]
out = {}
for run in sorted(os.listdir(logdir)):
    ea = EventAccumulator(os.path.join(logdir, run), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    scalars = {t: [[e.step, e.value] for e in ea.Scalars(t)] for t in tags["scalars"]}
    texts = {}
    for t in tags["tensors"]:
        texts[t] = [[e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode("utf-8")] for e in ea.Tensors(t)]
    out[run] = {"scalars": scalars, "texts": texts}
json.dump(out, sys.stdout)
