"""A numpy trainer: adds one to every float param (integers too), logs, answers each task."""
import numpy as np

import flotilla

flotilla.init()
while flotilla.is_running():
    model = flotilla.receive()
    params = {}
    for name, a in model.params.items():
        if a.dtype == flotilla.bfloat16:
            params[name] = flotilla.f32_to_bf16(flotilla.bf16_to_f32(a) + 1)
        elif a.dtype == np.bool_:
            params[name] = ~a
        else:
            params[name] = a + np.array(1, dtype=a.dtype)
    flotilla.log("round", model.current_round, step=model.current_round)
    flotilla.send(
        flotilla.FLModel(
            params=params,
            metrics={"tensors": len(params)},
            meta={"site": flotilla.site_name(), "job": flotilla.job_id(), "task": flotilla.task_name(), "NUM_STEPS_CURRENT_ROUND": 1},
        )
    )
