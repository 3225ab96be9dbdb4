"""The HTTP API (PROTOCOL.md §5) through the official Python server SDK (pusher-http-python),
with WebSocket subscribers checking what is delivered. The Python SDK differs from the Node one
in ways the server must accept: it sends body_md5 on GET requests too, and it posts
terminate_connections to /users/{id}/... without the /apps/{id} prefix."""

import json

import pytest
from pusher.errors import PusherBadAuth, PusherBadRequest

from support import eventually, sdk, unique

QUIET = 0.3  # seconds watched for "nothing arrives"


def join(connect, client, channel, user_id=None, user_info=None):
    """A new socket subscribed to `channel`, authorized with the SDK's authenticate()."""
    sock = connect()
    if channel.startswith(("private-", "presence-")):
        custom = {"user_id": user_id, "user_info": user_info or {}} if channel.startswith("presence-") else None
        auth = client.authenticate(channel=channel, socket_id=sock.socket_id, custom_data=custom)
        sock.subscribe(channel, auth["auth"], auth.get("channel_data"))
    else:
        sock.subscribe(channel)
    return sock


def test_trigger_one_channel_is_delivered_verbatim(client, connect):
    channel = unique("py-one")
    a, b = join(connect, client, channel), join(connect, client, channel)
    data = {"text": "héllo", "n": 1, "list": [1, 2]}

    assert client.trigger(channel, "py-event", data) == {}

    for sock in (a, b):
        message = sock.event(channel, "py-event")
        # The data string is delivered exactly as the SDK encoded it, not re-encoded.
        assert message["raw_data"] == json.dumps(data, ensure_ascii=False)
        assert message["data"] == data
    client.trigger(channel, "py-text", "plain text")
    assert a.event(channel, "py-text")["data"] == "plain text"
    a.drain(QUIET)
    assert [m["event"] for m in a.events_on(channel)] == ["py-event", "py-text"], "each exactly once"


def test_trigger_several_channels(client, connect):
    channels = [unique("py-many-a"), unique("py-many-b"), unique("private-py-many-c")]
    socks = {c: join(connect, client, c) for c in channels}
    both = join(connect, client, channels[0])
    both.subscribe(channels[1])

    assert client.trigger(channels, "fanout", {"to": "all"}) == {}

    for c, sock in socks.items():
        assert sock.event(c, "fanout")["data"] == {"to": "all"}
    both.event(channels[0], "fanout")
    both.event(channels[1], "fanout")
    both.drain(QUIET)
    assert len(both.events_on(channels[0])) == 1 and len(both.events_on(channels[1])) == 1


def test_trigger_excludes_socket_id(client, connect):
    channel = unique("py-exclude")
    a, b = join(connect, client, channel), join(connect, client, channel)

    client.trigger(channel, "not-for-a", {"x": 1}, socket_id=a.socket_id)

    assert b.event(channel, "not-for-a")["data"] == {"x": 1}
    assert a.drain(QUIET) == []


def test_trigger_batch(client, connect):
    a_name, b_name = unique("py-batch-a"), unique("py-batch-b")
    a, b = join(connect, client, a_name), join(connect, client, b_name)

    result = client.trigger_batch([
        {"channel": a_name, "name": "first", "data": {"i": 1}},
        {"channel": b_name, "name": "second", "data": "two"},
        {"channel": a_name, "name": "third", "data": {"i": 3}},
    ])
    assert result == {}
    assert a.event(a_name, "first")["data"] == {"i": 1}
    assert a.event(a_name, "third")["data"] == {"i": 3}
    assert b.event(b_name, "second")["data"] == "two"
    a.drain(QUIET)
    assert [m["event"] for m in a.events_on(a_name)] == ["first", "third"]

    # info in a batch entry: one attribute object per event, in order.
    with_info = client.trigger_batch([
        {"channel": a_name, "name": "fourth", "data": "4", "info": "subscription_count"},
        {"channel": b_name, "name": "fifth", "data": "5"},
    ])
    assert with_info == {"batch": [{"subscription_count": 1}, {}]}


def test_channels_info_with_prefix_and_user_count(client, connect):
    tag = unique("pylist")
    room = f"presence-{tag}"
    public = f"{tag}-public"
    join(connect, client, room, "py-u1")
    join(connect, client, room, "py-u1")  # same user twice: one user
    join(connect, client, room, "py-u2")
    join(connect, client, public)

    # GET with body_md5 of the empty body (the SDK always sends it): must succeed.
    assert client.channels_info(prefix_filter=room, attributes=["user_count"]) == {
        "channels": {room: {"user_count": 2}}
    }
    assert client.channels_info(prefix_filter=tag) == {"channels": {public: {}}}
    assert public in client.channels_info()["channels"]
    with pytest.raises(PusherBadRequest):
        client.channels_info(prefix_filter=tag, attributes=["user_count"])


def test_channel_info(client, connect):
    room = unique("presence-pyinfo")
    public = unique("py-info")
    for user in ("a", "b", "a"):
        join(connect, client, room, user)
    join(connect, client, public)
    join(connect, client, public)

    assert client.channel_info(room, ["user_count", "subscription_count"]) == {
        "occupied": True,
        "user_count": 2,
        "subscription_count": 3,
    }
    assert client.channel_info(public, ["subscription_count"]) == {"occupied": True, "subscription_count": 2}
    assert client.channel_info(public) == {"occupied": True}
    assert client.channel_info(unique("py-nobody")) == {"occupied": False}
    with pytest.raises(PusherBadRequest):
        client.channel_info(public, ["user_count"])


def test_users_info(client, connect):
    room = unique("presence-pyusers")
    for user in ("u1", "u2", "u1", "u3"):
        join(connect, client, room, user, {"name": user.upper()})

    users = client.users_info(room)["users"]
    assert sorted(u["id"] for u in users) == ["u1", "u2", "u3"]
    assert all(set(u) == {"id"} for u in users)
    with pytest.raises(PusherBadRequest):
        client.users_info(unique("py-public"))


def test_terminate_user_connections_without_app_prefix(client, connect):
    room = unique("presence-pyterm")
    public = unique("py-term-pub")
    victims = [join(connect, client, room, "py-victim") for _ in range(3)]
    bystander = join(connect, client, room, "py-bystander")
    bystander.subscribe(public)

    # The SDK posts to /users/py-victim/terminate_connections (no /apps/1).
    assert client.terminate_user_connections("py-victim") == {}

    for sock in victims:
        error = sock.wait_for(lambda m: m["event"] == "pusher:error", what="pusher:error")
        assert error["data"]["code"] == 4009
        assert sock.wait_closed() == 4009
    bystander.drain(QUIET)
    assert bystander.close_code is None, "other users stay connected"
    eventually(lambda: [u["id"] for u in client.users_info(room)["users"]], ["py-bystander"])
    client.trigger(public, "still-here", "yes")
    assert bystander.event(public, "still-here")["data"] == "yes"


def test_authenticate_output_is_accepted(client, connect):
    private = unique("private-pyauth")
    sock = connect()
    auth = client.authenticate(channel=private, socket_id=sock.socket_id)
    assert set(auth) == {"auth"}
    sock.subscribe(private, auth["auth"])
    client.trigger(private, "secret-event", {"s": 1})
    assert sock.event(private, "secret-event")["data"] == {"s": 1}

    # A signature for another socket is refused, and the socket stays usable.
    other = connect()
    with pytest.raises(AssertionError):
        other.subscribe(private, auth["auth"])
    assert other.close_code is None

    room = unique("presence-pyauth")
    presence = client.authenticate(
        channel=room, socket_id=other.socket_id, custom_data={"user_id": "py-auth", "user_info": {"n": 1}}
    )
    succeeded = other.subscribe(room, presence["auth"], presence["channel_data"])
    assert succeeded["data"]["presence"]["ids"] == ["py-auth"]
    assert succeeded["data"]["presence"]["hash"] == {"py-auth": {"n": 1}}


def test_wrong_secret_raises_bad_auth(server, connect):
    channel = unique("py-badauth")
    sock = connect()
    sock.subscribe(channel)
    bad = sdk(server.port, secret="not-the-secret")
    with pytest.raises(PusherBadAuth):
        bad.trigger(channel, "leak", "x")
    with pytest.raises(PusherBadAuth):
        bad.channels_info()
    with pytest.raises(PusherBadAuth):
        bad.terminate_user_connections("anyone")
    assert sock.drain(QUIET) == []
