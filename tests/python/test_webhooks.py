"""Webhooks (PROTOCOL.md §6) checked with the official Python SDK: warren is started with a
webhook target pointing at an http.server receiver in this process, and every request that
receiver gets must pass `pusher.Pusher.validate_webhook(key, signature, body)` (key, HMAC-SHA256
signature of the raw body, time_ms within 300 s) and carry exactly `Content-Type:
application/json`. Covered: channel_occupied, member_added, client_event."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support import APP, free_port, healthy, sdk, unique
from ws_client import PusherSocket

REPO_ROOT = Path(__file__).resolve().parents[2]
CUSTOM_HEADER = ("X-Custom", "py")


class Receiver:
    """An HTTP server on a free port recording every request as {path, headers, body} and
    answering 200."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": self.headers, "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def wait_for(self, predicate, timeout=10.0, what="webhook event"):
        """The first (request, event) whose event matches `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            for request in self.snapshot():
                for event in json.loads(request["body"]).get("events", []):
                    if predicate(event):
                        return request, event
            if time.monotonic() > deadline:
                bodies = [r["body"].decode("utf-8", "replace") for r in self.snapshot()]
                raise AssertionError(f"no {what} within {timeout}s; requests: {bodies}")
            time.sleep(0.02)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class WebhookServer:
    """warren started with a config sending every webhook of the default app to `receiver`."""

    def __init__(self, receiver):
        binary = Path(os.environ.get("WARREN_BIN", REPO_ROOT / "target" / "debug" / "warren"))
        if not os.access(binary, os.X_OK):
            pytest.fail(f"no executable at {binary}: build it with `cargo build` or set WARREN_BIN")
        self.receiver = receiver
        self.dir = tempfile.mkdtemp(prefix="warren-py-webhooks-")
        config = Path(self.dir) / "warren.toml"
        config.write_text(
            f"""
[server]
activity_timeout = 120
shutdown_grace = 1

[webhooks]
grace_ms = 500
batch_window_ms = 50
spool_dir = {json.dumps(str(Path(self.dir) / "spool"))}

[[apps]]
id = {json.dumps(APP["app_id"])}
key = {json.dumps(APP["key"])}
secret = {json.dumps(APP["secret"])}
webhooks = [{{ url = {json.dumps(receiver.url)}, headers = {{ {json.dumps(CUSTOM_HEADER[0])} = {json.dumps(CUSTOM_HEADER[1])} }} }}]
"""
        )
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [str(binary), "--port", str(self.port), "--bind", "127.0.0.1", "--shards", "2", "--config", str(config)],
            cwd=REPO_ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "WARREN_LOG": os.environ.get("WARREN_LOG", "info")},
        )
        deadline = time.monotonic() + 10
        while not healthy(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"warren did not become healthy on port {self.port}:\n{self.output()}")
            time.sleep(0.02)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-20000:]

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def webhooks():
    """(server, receiver): warren with a webhook target, and the receiver it posts to."""
    receiver = Receiver()
    server = WebhookServer(receiver)
    yield server, receiver
    server.stop()
    receiver.close()


@pytest.fixture
def sockets(webhooks):
    """A factory of WebSocket clients of the webhook server, closed after the test."""
    server, _ = webhooks
    opened = []

    def make():
        s = PusherSocket(server.port, APP["key"])
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def assert_validated(server, request, event):
    """`request` passes the SDK's validate_webhook and its decoded events contain `event`."""
    headers = request["headers"]
    assert headers.get("Content-Type") == "application/json", headers.items()
    assert headers.get(CUSTOM_HEADER[0]) == CUSTOM_HEADER[1], headers.items()
    assert request["path"] == "/hook"
    client = sdk(server.port)
    validated = client.validate_webhook(
        key=headers.get("X-Pusher-Key"),
        signature=headers.get("X-Pusher-Signature"),
        body=request["body"].decode("utf-8"),
    )
    assert validated is not None, f"validate_webhook refused {headers.items()} {request['body']!r}"
    assert isinstance(validated["time_ms"], int)
    assert event in validated["events"]
    return validated


def test_channel_occupied_webhook_passes_sdk_validation(webhooks, sockets):
    server, receiver = webhooks
    channel = unique("py-wh")
    sockets().subscribe(channel)
    request, event = receiver.wait_for(lambda e: e.get("channel") == channel, what=f"event on {channel}")
    assert event == {"name": "channel_occupied", "channel": channel}
    assert_validated(server, request, event)


def test_member_added_webhook_passes_sdk_validation(webhooks, sockets):
    server, receiver = webhooks
    room = unique("presence-py-wh")
    sock = sockets()
    auth = sdk(server.port).authenticate(
        channel=room, socket_id=sock.socket_id, custom_data={"user_id": "py-user", "user_info": {"n": 1}}
    )
    sock.subscribe(room, auth["auth"], auth["channel_data"])
    request, event = receiver.wait_for(
        lambda e: e.get("channel") == room and e.get("name") == "member_added", what="member_added"
    )
    assert event == {"name": "member_added", "channel": room, "user_id": "py-user"}
    assert_validated(server, request, event)


def test_member_added_with_a_numeric_user_id_is_a_string_the_sdk_validates(webhooks, sockets):
    """The one user_id rule (issue 11): an integer user_id in channel_data is sent as its decimal
    text in the webhook, and the SDK's validate_webhook accepts it."""
    server, receiver = webhooks
    room = unique("presence-py-num")
    sock = sockets()
    auth = sdk(server.port).authenticate(
        channel=room, socket_id=sock.socket_id, custom_data={"user_id": 42, "user_info": {"n": 1}}
    )
    sock.subscribe(room, auth["auth"], auth["channel_data"])
    request, event = receiver.wait_for(
        lambda e: e.get("channel") == room and e.get("name") == "member_added", what="member_added"
    )
    assert event == {"name": "member_added", "channel": room, "user_id": "42"}
    assert_validated(server, request, event)


def test_client_event_webhook_passes_sdk_validation(webhooks, sockets):
    server, receiver = webhooks
    channel = unique("private-py-wh")
    client = sdk(server.port)
    sender, other = sockets(), sockets()
    for s in (sender, other):
        s.subscribe(channel, client.authenticate(channel=channel, socket_id=s.socket_id)["auth"])
    sender.send("client-py", {"x": 1, "y": "z"}, channel=channel)
    other.event(channel, "client-py")  # relayed
    request, event = receiver.wait_for(
        lambda e: e.get("channel") == channel and e.get("name") == "client_event", what="client_event"
    )
    assert set(event) == {"name", "channel", "event", "data", "socket_id"}, event  # no user_id off presence
    assert event["event"] == "client-py"
    assert event["socket_id"] == sender.socket_id
    assert isinstance(event["data"], str) and json.loads(event["data"]) == {"x": 1, "y": "z"}
    assert_validated(server, request, event)


def test_sdk_refuses_a_tampered_webhook(webhooks, sockets):
    """A control for the tests above: the same validator refuses a changed body, a wrong key and
    a signature made with another secret."""
    server, receiver = webhooks
    channel = unique("py-wh-tamper")
    sockets().subscribe(channel)
    request, event = receiver.wait_for(lambda e: e.get("channel") == channel, what=f"event on {channel}")
    body = request["body"].decode("utf-8")
    key, signature = request["headers"].get("X-Pusher-Key"), request["headers"].get("X-Pusher-Signature")
    client = sdk(server.port)
    assert client.validate_webhook(key=key, signature=signature, body=body) is not None
    assert client.validate_webhook(key=key, signature=signature, body=body.replace(channel, channel + "x")) is None
    assert client.validate_webhook(key="other-key", signature=signature, body=body) is None
    assert sdk(server.port, secret="other-secret").validate_webhook(key=key, signature=signature, body=body) is None
