"""A minimal Pusher protocol client (PROTOCOL.md §1, §2) over websocket-client, enough to
subscribe to channels and watch what the server delivers: the subscribing side of the HTTP API
tests."""

import json
import struct
import time

import websocket


class PusherSocket:
    """One WebSocket connection to the server as app `key`."""

    def __init__(self, port, key="app-key", timeout=5.0):
        url = f"ws://127.0.0.1:{port}/app/{key}?protocol=7&client=python-e2e&version=1.0"
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.messages = []  # every decoded message received, in order
        self.close_code = None
        first = self._read(timeout)
        assert first is not None and first["event"] == "pusher:connection_established", first
        self.socket_id = first["data"]["socket_id"]

    # ------------------------------------------------------------------ reading

    def _read(self, timeout):
        """Read one text message (decoded, `data` JSON-decoded when it is a JSON string); None
        when `timeout` passes or the server closed (then `close_code` is set)."""
        if self.close_code is not None:
            return None
        self.ws.settimeout(max(timeout, 0.001))
        while True:
            try:
                opcode, payload = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                return None
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                self.close_code = self.close_code or 1006
                return None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return None
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue  # ping / pong: websocket-client answers pings itself
            message = json.loads(payload.decode("utf-8"))
            if isinstance(message.get("data"), str):
                try:
                    message["raw_data"] = message["data"]
                    message["data"] = json.loads(message["data"])
                except ValueError:
                    pass
            self.messages.append(message)
            return message

    def wait_for(self, predicate, timeout=5.0, what="message", since=0):
        """The first message (received from index `since` on, or arriving within `timeout`)
        matching `predicate`."""
        for message in self.messages[since:]:
            if predicate(message):
                return message
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._read(deadline - time.monotonic())
            if message is not None and predicate(message):
                return message
            if self.close_code is not None:
                break
        raise AssertionError(f"no {what} within {timeout}s (close code {self.close_code}); got {self.messages}")

    def event(self, channel, name, timeout=5.0):
        """Wait for event `name` on `channel`."""
        return self.wait_for(
            lambda m: m.get("channel") == channel and m.get("event") == name,
            timeout,
            f"event {name!r} on {channel!r}",
        )

    def drain(self, seconds=0.3):
        """Read for `seconds`; returns the channel events (not pusher ones) received meanwhile."""
        start = len(self.messages)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()) is not None:
            pass
        return [m for m in self.messages[start:] if not m["event"].startswith("pusher")]

    def events_on(self, channel):
        """Channel events (not pusher ones) received so far on `channel`."""
        return [m for m in self.messages if m.get("channel") == channel and not m["event"].startswith("pusher")]

    def wait_closed(self, timeout=5.0):
        """Read until the server closes the connection; returns the close code."""
        deadline = time.monotonic() + timeout
        while self.close_code is None and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        assert self.close_code is not None, f"still open after {timeout}s; got {self.messages}"
        return self.close_code

    # ------------------------------------------------------------------ sending

    def send(self, event, data, channel=None):
        message = {"event": event, "data": data}
        if channel is not None:
            message["channel"] = channel
        self.ws.send(json.dumps(message))

    def subscribe(self, channel, auth=None, channel_data=None, timeout=5.0):
        """Subscribe and wait for the answer; returns the subscription_succeeded message, or
        raises AssertionError carrying the error the server sent."""
        data = {"channel": channel, "auth": auth or ""}
        if channel_data is not None:
            data["channel_data"] = channel_data
        since = len(self.messages)
        self.send("pusher:subscribe", data)
        answer = self.wait_for(
            lambda m: (m.get("channel") == channel and m["event"] in (
                "pusher_internal:subscription_succeeded", "pusher:subscription_error"))
            or m["event"] == "pusher:error",
            timeout,
            f"subscription answer for {channel!r}",
            since,
        )
        assert answer["event"] == "pusher_internal:subscription_succeeded", answer
        return answer

    def unsubscribe(self, channel):
        self.send("pusher:unsubscribe", {"channel": channel})

    def close(self):
        try:
            self.ws.close(timeout=1)
        except Exception:  # already gone
            pass
