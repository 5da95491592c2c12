"""Errors the Python Client API raises."""


class FlotillaError(RuntimeError):
    """Base class of every error raised by the flotilla package (besides SafetensorsError)."""


class ProtocolError(FlotillaError):
    """The client sent something the protocol does not allow, or we were asked to."""


class ProtocolMismatchError(ProtocolError):
    """This package and the hosting Flotilla client speak different protocol versions."""


class ConnectionClosedError(FlotillaError):
    """The hosting client closed the socket (it stopped or crashed)."""
