"""Signed-in users (PROTOCOL.md §2.9, §5) through the official Python server SDK: sockets sign
in with the SDK's authenticate_user(), send_to_user() reaches every socket signed in as the user
(on its #server-to-user- channel, which the socket subscribes to as pusher-js does), and
terminate_user_connections() closes signed-in sockets that never joined a presence channel."""

import json

import pytest
from pusher.errors import PusherBadRequest

from support import unique

QUIET = 0.3  # seconds watched for "nothing arrives"


def sign_in(connect, client, user_id):
    """A new socket signed in as `user_id` and subscribed to its #server-to-user- channel."""
    sock = connect()
    signed = client.authenticate_user(sock.socket_id, {"id": user_id, "user_info": {"py": True}})
    sock.send("pusher:signin", {"auth": signed["auth"], "user_data": signed["user_data"]})
    success = sock.wait_for(lambda m: m["event"] in ("pusher:signin_success", "pusher:error"), what="sign-in answer")
    assert success["event"] == "pusher:signin_success", success
    assert json.loads(success["data"]["user_data"])["id"] == user_id
    sock.subscribe(f"#server-to-user-{user_id}")
    return sock


def test_send_to_user_reaches_every_socket_of_the_user(client, connect):
    user = unique("py-user")
    socks = [sign_in(connect, client, user) for _ in range(3)]
    other = sign_in(connect, client, unique("py-other"))
    channel = f"#server-to-user-{user}"

    for n in range(5):
        assert client.send_to_user(user, "py-note", {"n": n}) == {}

    for sock in socks:
        sock.wait_for(lambda _: len(sock.events_on(channel)) >= 5, what="5 notes")
        assert [m["data"]["n"] for m in sock.events_on(channel)] == list(range(5))
    assert other.drain(QUIET) == []


def test_send_to_user_with_an_invalid_user_id_is_400(client):
    # The SDK itself refuses bad characters; an id it lets through that no socket can sign in as
    # (over 128 characters: #server-to-user-{id} would pass the channel-name limit) is 400.
    with pytest.raises(PusherBadRequest, match="Invalid user id"):
        client.send_to_user("u" * 150, "py-note", {})


def test_a_socket_signed_in_as_someone_else_cannot_take_the_users_channel(client, connect):
    sock = sign_in(connect, client, unique("py-me"))
    with pytest.raises(AssertionError, match="AuthError"):
        sock.subscribe(f"#server-to-user-{unique('py-you')}")


def test_terminate_user_connections_closes_signed_in_sockets(client, connect):
    user = unique("py-signed-victim")
    victims = [sign_in(connect, client, user) for _ in range(2)]
    bystander = sign_in(connect, client, unique("py-signed-bystander"))

    assert client.terminate_user_connections(user) == {}

    for sock in victims:
        error = sock.wait_for(lambda m: m["event"] == "pusher:error", what="pusher:error")
        assert error["data"]["code"] == 4009
        assert sock.wait_closed() == 4009
    bystander.drain(QUIET)
    assert bystander.close_code is None
