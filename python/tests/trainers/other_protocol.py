"""Pretends to be a flotilla package from a release speaking protocol 2: init() must fail clearly."""
import flotilla.client

flotilla.client.PROTOCOL_VERSION = 2

import flotilla  # noqa: E402

flotilla.init()
print("should not get here")
