//! Server addresses given on the command line: `scheme://host[:port][/prefix]`.

use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed server URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The resolved address (port 80 when none is given).
    pub addr: SocketAddr,
    /// `host[:port]` as given, for the `Host` header.
    pub host: String,
    /// The path prefix without a trailing slash (empty when none).
    pub prefix: String,
}

impl Endpoint {
    /// Parses and resolves `url`, which must start with `scheme://`.
    pub fn parse(url: &str, scheme: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix(scheme)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or_else(|| format!("unsupported URL {url:?}: only {scheme}:// is supported"))?;
        let (host, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let with_port = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        Ok(Endpoint {
            addr,
            host: host.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_prefix() {
        let e = Endpoint::parse("ws://127.0.0.1:6001/ws/", "ws").unwrap();
        assert_eq!(
            (e.addr.port(), e.host.as_str(), e.prefix.as_str()),
            (6001, "127.0.0.1:6001", "/ws")
        );
        let e = Endpoint::parse("http://127.0.0.1", "http").unwrap();
        assert_eq!((e.addr.port(), e.prefix.as_str()), (80, ""));
        assert!(Endpoint::parse("wss://x", "ws").is_err());
    }
}
