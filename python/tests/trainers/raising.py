"""A trainer whose training step raises: the exception must reach the client with its traceback."""
import flotilla


def train_one_epoch(params):
    scale = 0
    return {k: v / scale for k, v in params.items()} if scale else params["missing.weight"]


flotilla.init()
while flotilla.is_running():
    model = flotilla.receive()
    flotilla.send(flotilla.FLModel(params=train_one_epoch(model.params)))
