"""Connects and exits: used to test the handshake (e.g. a protocol mismatch)."""
import flotilla

flotilla.init()
print("connected to", flotilla.site_name())
