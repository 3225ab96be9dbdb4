"""Shared bits of the Python end-to-end tests."""

import os
import time

import pusher

APP = {"app_id": "1", "key": "app-key", "secret": "app-secret"}


def sdk(port, **overrides):
    """The Pusher SDK (pusher-http-python) for the server on `port`."""
    return pusher.Pusher(**{**APP, **overrides}, ssl=False, host="127.0.0.1", port=port, timeout=5)


_counter = [0]


def unique(prefix):
    """A channel name unique within this run."""
    _counter[0] += 1
    return f"{prefix}-{os.getpid()}-{_counter[0]}"


def eventually(fn, expected, timeout=5.0):
    """Poll `fn()` until it equals `expected` (state settles asynchronously after a close)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value == expected or time.monotonic() > deadline:
            assert value == expected
            return value
        time.sleep(0.02)
