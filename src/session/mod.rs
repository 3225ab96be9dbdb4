//! The per-socket layer: the task that owns one accepted TCP connection. It serves plain HTTP
//! (through [`crate::http::server`]) until the client asks for a WebSocket upgrade, then admits
//! the client ([`admit`]) and runs its Pusher session ([`websocket`]), handing each message to
//! [`dispatch`].

pub mod admit;
pub mod dispatch;
pub mod websocket;

use crate::http::server::{self, Served};
use crate::shard::Shard;
use glommio::net::TcpStream;
use std::rc::Rc;

/// Serves one accepted TCP connection to the end.
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
    let Served::Upgrade { head, leftover } = Box::pin(server::serve(&shard, &mut stream)).await
    else {
        return;
    };
    let peer = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let client_ip = head.client_ip(peer, &shard.config.server.trusted_proxies);
    // The session runs in a task of its own, so that an idle connection carries only the
    // session's state, not this request loop's.
    if let Some(admitted) =
        Box::pin(websocket::upgrade(&shard, &mut stream, *head, client_ip)).await
    {
        let conn = websocket::open(&shard, &stream, admitted, client_ip);
        let session = websocket::session(shard, stream, conn, leftover, client_ip);
        glommio::spawn_local(session).detach();
    } else {
        tracing::debug!(%client_ip, "WebSocket connection refused");
    }
}
