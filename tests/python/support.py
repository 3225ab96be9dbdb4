"""Shared bits of the Python end-to-end tests."""

import os
import socket
import time
import urllib.request

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


def free_port():
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port):
    """Whether a server on `port` answers GET /health with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as res:
            return res.status == 200
    except OSError:
        return False
