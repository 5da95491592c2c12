"""Sends every task's params straight back (protocol overhead only: used for throughput measurements)."""
import flotilla

flotilla.init()
while flotilla.is_running():
    flotilla.send(flotilla.FLModel(params=flotilla.receive().params))
