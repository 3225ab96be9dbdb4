//! A minimal Pusher HTTP API client: signed `POST /apps/{id}/events` over one keep-alive
//! HTTP/1.1 connection on a plain blocking `TcpStream`, written by hand.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the API is and how to sign for it.
#[derive(Debug, Clone)]
pub struct ApiTarget {
    addr: SocketAddr,
    host: String,
    prefix: String,
    app_id: String,
    key: String,
    secret: String,
}

impl ApiTarget {
    /// From `http://host:port[/prefix]` (or, if `api` is `None`, the host and port of `ws_url`).
    pub fn new(
        api: Option<&str>,
        ws_url: &str,
        app_id: &str,
        key: &str,
        secret: &str,
    ) -> Result<Self, String> {
        let url = match api {
            Some(a) => a.to_string(),
            None => ws_url.replacen("ws://", "http://", 1),
        };
        let endpoint = crate::endpoint::Endpoint::parse(&url, "http")?;
        Ok(Self {
            addr: endpoint.addr,
            host: endpoint.host,
            prefix: endpoint.prefix,
            app_id: app_id.to_string(),
            key: key.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The signed request that publishes `body` (a JSON event) at unix time `timestamp`.
    pub fn events_request(&self, body: &str, timestamp: u64) -> Vec<u8> {
        let path = format!("/apps/{}/events", self.app_id);
        let query = signed_query(&self.key, &self.secret, "POST", &path, body, timestamp);
        format!(
            "POST {}{path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            self.prefix,
            self.host,
            body.len()
        )
        .into_bytes()
    }
}

/// The query string of a signed API request: `auth_key`, `auth_timestamp`, `auth_version`,
/// `body_md5` (sorted) and `auth_signature` = hex HMAC-SHA256 of
/// `"METHOD\nPATH\nsorted params"`.
pub fn signed_query(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &str,
    timestamp: u64,
) -> String {
    let body_md5 = hex::encode(Md5::digest(body.as_bytes()));
    let params =
        format!("auth_key={key}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(format!("{method}\n{path}\n{params}").as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!("{params}&auth_signature={signature}")
}

/// The body of a publish of event `name` on `channel` with `data` (a string).
pub fn event_body(name: &str, channel: &str, data: &str) -> String {
    serde_json::json!({ "name": name, "channel": channel, "data": data }).to_string()
}

/// One keep-alive connection to the API; reconnects after an error.
#[derive(Debug)]
pub struct ApiClient {
    target: ApiTarget,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl ApiClient {
    /// A client for `target` (connects on first use).
    pub fn new(target: ApiTarget) -> Self {
        Self {
            target,
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Publishes one event and waits for the answer: `Ok(())` on 200, else why not.
    pub fn publish(&mut self, body: &str) -> Result<(), String> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let request = self.target.events_request(body, timestamp);
        let result = self.exchange(&request);
        if result.is_err() {
            self.stream = None;
        }
        match result {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!(
                "API answered {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Err(e) => Err(format!("API request failed: {e}")),
        }
    }

    fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.target.addr, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(request)?;
        // Read the head, then Content-Length bytes of body.
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the API closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let close = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
            })
        });
        while self.buf.len() < head_end + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the API closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_pusher_libraries() {
        // Pusher's documented example (https://pusher.com/docs/channels/library_auth_reference/rest-api).
        let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let q = signed_query(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            "POST",
            "/apps/3/events",
            body,
            1353088179,
        );
        assert!(q.starts_with("auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature="));
        assert!(q.ends_with("da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"));
    }

    #[test]
    fn api_urls() {
        let t = ApiTarget::new(None, "ws://127.0.0.1:6001", "1", "k", "s").unwrap();
        assert_eq!(t.addr, "127.0.0.1:6001".parse().unwrap());
        let req = String::from_utf8(t.events_request("{}", 1)).unwrap();
        assert!(req.starts_with("POST /apps/1/events?auth_key=k&auth_timestamp=1&"));
        assert!(req.ends_with("\r\n\r\n{}"));
    }
}
