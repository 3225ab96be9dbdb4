//! The client side of WebSocket framing (RFC 6455): the upgrade request, masked frames out,
//! and a decoder for the server's unmasked frames. Just what the harness needs.

/// Frame opcodes the harness handles.
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// UTF-8 text.
    pub const TEXT: u8 = 0x1;
    /// Binary data.
    pub const BINARY: u8 = 0x2;
    /// Close, with an optional code and reason.
    pub const CLOSE: u8 = 0x8;
    /// Ping, to be answered with a pong carrying the same payload.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Largest frame payload accepted from the server.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// A fixed, valid `Sec-WebSocket-Key`. RFC 6455 asks for a random one; servers only hash it.
const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The HTTP/1.1 upgrade request for `path` on `host`.
pub fn upgrade_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// The result of looking for the end of the server's upgrade response.
#[derive(Debug, PartialEq, Eq)]
pub enum UpgradeResponse {
    /// More bytes are needed.
    Partial,
    /// `101 Switching Protocols`; frames start at this offset.
    Accepted(usize),
    /// Any other answer; holds the status line.
    Refused(String),
}

/// Looks for a complete response head in `buf`.
pub fn parse_upgrade_response(buf: &[u8]) -> UpgradeResponse {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return UpgradeResponse::Partial;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let _version = parts.next();
    if parts.next() == Some("101") {
        UpgradeResponse::Accepted(end + 4)
    } else {
        UpgradeResponse::Refused(status_line.to_string())
    }
}

/// Appends one masked, final frame with `payload` to `out`.
pub fn write_masked_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | (opcode & 0x0F));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// A frame found at the start of a buffer: where its payload lies and how long it is in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Whether this is the last frame of its message.
    pub fin: bool,
    /// The frame's opcode.
    pub opcode: u8,
    /// Offset of the payload from the start of the frame.
    pub payload_start: usize,
    /// Payload length.
    pub payload_len: usize,
    /// The masking key, if the frame is masked (servers must not mask).
    pub mask: Option<[u8; 4]>,
}

impl FrameHead {
    /// Total frame length, header included.
    pub fn total_len(&self) -> usize {
        self.payload_start + self.payload_len
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The payload is larger than [`MAX_PAYLOAD`].
    TooLarge(u64),
}

/// Decodes the header of the frame at the start of `buf`; `Ok(None)` if the whole frame
/// (header and payload) has not arrived yet.
pub fn decode_head(buf: &[u8]) -> Result<Option<FrameHead>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut pos) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Ok(None),
        n => (n as u64, 2),
    };
    if len > MAX_PAYLOAD as u64 {
        return Err(FrameError::TooLarge(len));
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    let head = FrameHead {
        fin,
        opcode,
        payload_start: pos,
        payload_len: len as usize,
        mask,
    };
    Ok((buf.len() >= head.total_len()).then_some(head))
}

/// The close code carried by a close frame's payload, if any.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_frames_round_trip_through_the_decoder() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_masked_frame(&mut out, opcode::TEXT, &payload, [1, 2, 3, 4]);
            let head = decode_head(&out).unwrap().unwrap();
            assert!(head.fin);
            assert_eq!(head.opcode, opcode::TEXT);
            assert_eq!(head.payload_len, len);
            assert_eq!(head.total_len(), out.len());
            let mask = head.mask.unwrap();
            let unmasked: Vec<u8> = out[head.payload_start..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i & 3])
                .collect();
            assert_eq!(unmasked, payload);
            assert_eq!(decode_head(&out[..out.len() - 1]).unwrap(), None);
        }
    }

    #[test]
    fn server_frames_and_upgrade_responses() {
        let frame = [0x81, 0x02, b'h', b'i', 0x88];
        let head = decode_head(&frame).unwrap().unwrap();
        assert_eq!((head.payload_start, head.payload_len), (2, 2));
        assert_eq!(head.mask, None);
        assert_eq!(close_code(&[0x0F, 0xA1]), Some(4001));
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81";
        assert_eq!(
            parse_upgrade_response(ok),
            UpgradeResponse::Accepted(ok.len() - 1)
        );
        assert_eq!(
            parse_upgrade_response(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            UpgradeResponse::Refused("HTTP/1.1 404 Not Found".into())
        );
        assert_eq!(
            parse_upgrade_response(b"HTTP/1.1 101"),
            UpgradeResponse::Partial
        );
    }
}
