"""SCAFFOLD on a quadratic: site k pulls w towards its own target; K SGD steps, each corrected by c - c_i
(the TypeScript twin is in test/e2e/algorithms/algorithms-python.test.ts; both must give the same global model)."""
import numpy as np

import flotilla
from flotilla.algorithms import Scaffold

K, LR = 5, 0.1
sc = Scaffold()
flotilla.init()
k = int(flotilla.site_name().split("-")[-1])
target = np.float32([k, -k, 2 * k])
while flotilla.is_running():
    model = flotilla.receive()
    assert Scaffold.enabled(model), "the task must carry SCAFFOLD's marker"
    x, c = Scaffold.split(model)
    corr = sc.correction(c)["w"]
    w = x["w"].astype(np.float32).copy()
    for _ in range(K):
        w = (w - np.float32(LR) * (w - target)).astype(np.float32)
        w = (w - np.float32(LR) * corr).astype(np.float32)
    params = sc.result(x, {"w": w}, c, steps=K, lr=LR)
    flotilla.send(flotilla.FLModel(params=params, meta={"NUM_STEPS_CURRENT_ROUND": 1}))
