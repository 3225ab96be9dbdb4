//! WebSocket frames (RFC 6455): an incremental decoder for client frames and encoders for server
//! frames. Header parsing and formatting are tungstenite's; unmasking, fragment reassembly and the
//! message size limit are ours, so a connection holds no buffer while it is idle.

use crate::protocol::codes;
use std::io::Cursor;
use std::sync::Arc;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// A complete server frame, encoded once and shared by every socket that receives it.
pub type SharedFrame = Arc<[u8]>;

/// A complete message or control frame received from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A text message (UTF-8 checked).
    Text(String),
    /// A binary message (unsupported by Pusher; answered with an error).
    Binary,
    /// A ping, with its payload to echo in the pong.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame with its code, if any.
    Close(Option<u16>),
}

/// A violation that ends the connection with the given close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// RFC 6455 close code to send.
    pub close_code: u16,
    /// Reason for the close frame and the log.
    pub reason: &'static str,
}

impl FrameError {
    fn protocol(reason: &'static str) -> Self {
        FrameError {
            close_code: codes::WS_PROTOCOL_ERROR,
            reason,
        }
    }
}

/// Reassembles client frames into [`WsEvent`]s. Holds bytes only while a frame or a fragmented
/// message is incomplete.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    pending: Vec<u8>,
    fragments: Option<Vec<u8>>,
    fragments_are_text: bool,
}

impl FrameDecoder {
    /// Whether no partial frame or message is buffered.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.fragments.is_none()
    }

    /// Decodes what `bytes` completes; leftover bytes wait for the next call. Events are pushed to
    /// `out` in order; on error the connection must be closed with the returned code.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        max_message: usize,
        out: &mut Vec<WsEvent>,
    ) -> Result<(), FrameError> {
        if self.pending.is_empty() {
            let used = self.decode_frames(bytes, max_message, out)?;
            self.pending.extend_from_slice(&bytes[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(bytes);
            let used = self.decode_frames(&pending, max_message, out)?;
            pending.drain(..used);
            self.pending = pending;
        }
        if self.pending.is_empty() {
            self.pending = Vec::new();
        }
        Ok(())
    }

    /// Decodes whole frames from the front of `buf`; returns the bytes consumed.
    fn decode_frames(
        &mut self,
        buf: &[u8],
        max_message: usize,
        out: &mut Vec<WsEvent>,
    ) -> Result<usize, FrameError> {
        let mut used = 0;
        loop {
            let mut cursor = Cursor::new(&buf[used..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(used),
                Err(_) => return Err(FrameError::protocol("malformed frame header")),
            };
            if length > max_message as u64 {
                return Err(FrameError {
                    close_code: codes::WS_MESSAGE_TOO_BIG,
                    reason: "message too big",
                });
            }
            let start = used + cursor.position() as usize;
            let end = start + length as usize;
            if end > buf.len() {
                return Ok(used);
            }
            let mut payload = buf[start..end].to_vec();
            used = end;
            self.frame(header, &mut payload, max_message, out)?;
        }
    }

    fn frame(
        &mut self,
        header: FrameHeader,
        payload: &mut Vec<u8>,
        max_message: usize,
        out: &mut Vec<WsEvent>,
    ) -> Result<(), FrameError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(FrameError::protocol("reserved bits set"));
        }
        let Some(mask) = header.mask else {
            return Err(FrameError::protocol("client frames must be masked"));
        };
        unmask(payload, mask);
        match header.opcode {
            OpCode::Control(control) => {
                if !header.is_final || payload.len() > 125 {
                    return Err(FrameError::protocol("invalid control frame"));
                }
                out.push(match control {
                    Control::Ping => WsEvent::Ping(std::mem::take(payload)),
                    Control::Pong => WsEvent::Pong,
                    Control::Close => WsEvent::Close(close_code(payload)?),
                    Control::Reserved(_) => return Err(FrameError::protocol("reserved opcode")),
                });
                Ok(())
            }
            OpCode::Data(Data::Continue) => {
                let Some(message) = self.fragments.as_mut() else {
                    return Err(FrameError::protocol("continuation without a message"));
                };
                if message.len() + payload.len() > max_message {
                    return Err(FrameError {
                        close_code: codes::WS_MESSAGE_TOO_BIG,
                        reason: "message too big",
                    });
                }
                message.extend_from_slice(payload);
                if header.is_final {
                    let message = self.fragments.take().unwrap_or_default();
                    out.push(complete(message, self.fragments_are_text)?);
                }
                Ok(())
            }
            OpCode::Data(data @ (Data::Text | Data::Binary)) => {
                if self.fragments.is_some() {
                    return Err(FrameError::protocol("new message inside a fragmented one"));
                }
                let is_text = data == Data::Text;
                if header.is_final {
                    out.push(complete(std::mem::take(payload), is_text)?);
                } else {
                    self.fragments = Some(std::mem::take(payload));
                    self.fragments_are_text = is_text;
                }
                Ok(())
            }
            OpCode::Data(Data::Reserved(_)) => Err(FrameError::protocol("reserved opcode")),
        }
    }
}

fn complete(message: Vec<u8>, is_text: bool) -> Result<WsEvent, FrameError> {
    if !is_text {
        return Ok(WsEvent::Binary);
    }
    String::from_utf8(message)
        .map(WsEvent::Text)
        .map_err(|_| FrameError {
            close_code: codes::WS_INVALID_PAYLOAD,
            reason: "text frame is not valid UTF-8",
        })
}

/// The code of a client's close frame; a 1-byte payload or a code that may not be sent on the
/// wire (RFC 6455 §7.4: 1004–1006, 1015, and the unassigned 0–999 and 1016–2999) is a protocol
/// error, and a reason that is not UTF-8 fails the connection with 1007 (§5.5.1, §8.1).
fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::protocol("close frame with a 1-byte payload")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(FrameError::protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError {
                    close_code: codes::WS_INVALID_PAYLOAD,
                    reason: "close reason is not valid UTF-8",
                });
            }
            Ok(Some(code))
        }
    }
}

/// XORs a client frame's payload with its 4-byte mask (RFC 6455 §5.3). tungstenite keeps its own
/// helper private.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

fn encode(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    let length = payload.len() as u64;
    let mut out = Vec::with_capacity(header.len(length) + payload.len());
    header
        .format(length, &mut out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
    out
}

/// A server text frame carrying `text`.
pub fn text_frame(text: &str) -> Vec<u8> {
    encode(OpCode::Data(Data::Text), text.as_bytes())
}

/// A server text frame in a shared buffer, for fan-out.
pub fn shared_text_frame(text: &str) -> SharedFrame {
    text_frame(text).into()
}

/// Where the payload of an unmasked frame starts: after its 2-, 4- or 10-byte header (RFC 6455
/// §5.2); the frame's length when it is too short to have a header.
pub fn payload_offset(frame: &[u8]) -> usize {
    let at = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => frame.len(),
    };
    at.min(frame.len())
}

/// A close frame with a code and a short reason (truncated to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let code: u16 = CloseCode::from(code).into();
    let mut payload = code.to_be_bytes().to_vec();
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OpCode::Control(Control::Close), &payload)
}

/// A ping frame (empty payload).
pub fn ping_frame() -> Vec<u8> {
    encode(OpCode::Control(Control::Ping), &[])
}

/// A pong frame echoing `payload`.
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    encode(OpCode::Control(Control::Pong), payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_offset_skips_each_header_size() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let text = "x".repeat(len);
            let frame = shared_text_frame(&text);
            assert_eq!(&frame[payload_offset(&frame)..], text.as_bytes(), "{len}");
        }
        assert_eq!(payload_offset(&[0x81]), 1);
    }

    /// A masked client frame, as a browser would send it.
    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn feed_all(bytes: &[u8]) -> Result<Vec<WsEvent>, FrameError> {
        let mut decoder = FrameDecoder::default();
        let mut out = Vec::new();
        decoder.feed(bytes, 1024, &mut out)?;
        Ok(out)
    }

    #[test]
    fn decodes_text_byte_by_byte_and_frees_its_buffer() {
        let bytes = client_frame(1, true, b"{\"event\":\"pusher:ping\"}");
        let mut decoder = FrameDecoder::default();
        let mut out = Vec::new();
        for b in &bytes {
            decoder
                .feed(std::slice::from_ref(b), 1024, &mut out)
                .unwrap();
        }
        assert_eq!(
            out,
            vec![WsEvent::Text("{\"event\":\"pusher:ping\"}".into())]
        );
        assert!(decoder.is_idle());
        assert_eq!(decoder.pending.capacity(), 0);
    }

    #[test]
    fn reassembles_fragments_with_control_frames_between() {
        let mut bytes = client_frame(1, false, b"hel");
        bytes.extend(client_frame(9, true, b"p"));
        bytes.extend(client_frame(0, true, b"lo"));
        assert_eq!(
            feed_all(&bytes).unwrap(),
            vec![WsEvent::Ping(b"p".to_vec()), WsEvent::Text("hello".into())]
        );
    }

    #[test]
    fn rejects_bad_frames_with_the_right_close_code() {
        let unmasked = [0x81, 0x01, b'a'];
        assert_eq!(feed_all(&unmasked).unwrap_err().close_code, 1002);
        assert_eq!(
            feed_all(&client_frame(1, true, &[0xff, 0xfe]))
                .unwrap_err()
                .close_code,
            1007
        );
        assert_eq!(
            feed_all(&client_frame(1, true, &[b'a'; 2000]))
                .unwrap_err()
                .close_code,
            1009
        );
        assert_eq!(
            feed_all(&client_frame(0, true, b"x"))
                .unwrap_err()
                .close_code,
            1002
        );
        assert_eq!(
            feed_all(&client_frame(3, true, b"x"))
                .unwrap_err()
                .close_code,
            1002
        );
        assert_eq!(
            feed_all(&client_frame(9, false, b"x"))
                .unwrap_err()
                .close_code,
            1002
        );
        let mut two_starts = client_frame(1, false, b"a");
        two_starts.extend(client_frame(1, true, b"b"));
        assert_eq!(feed_all(&two_starts).unwrap_err().close_code, 1002);
        let mut too_big = client_frame(1, false, &[b'a'; 600]);
        too_big.extend(client_frame(0, true, &[b'a'; 600]));
        assert_eq!(feed_all(&too_big).unwrap_err().close_code, 1009);
    }

    #[test]
    fn binary_close_and_pong() {
        let mut bytes = client_frame(2, true, b"\x00\x01");
        bytes.extend(client_frame(10, true, b""));
        bytes.extend(client_frame(8, true, &1000u16.to_be_bytes()));
        assert_eq!(
            feed_all(&bytes).unwrap(),
            vec![WsEvent::Binary, WsEvent::Pong, WsEvent::Close(Some(1000))]
        );
    }

    #[test]
    fn close_codes_that_may_not_be_sent_are_protocol_errors() {
        for payload in [
            vec![3u8],
            1005u16.to_be_bytes().to_vec(),
            999u16.to_be_bytes().to_vec(),
            2000u16.to_be_bytes().to_vec(),
        ] {
            assert_eq!(
                feed_all(&client_frame(8, true, &payload))
                    .unwrap_err()
                    .close_code,
                1002
            );
        }
        assert_eq!(
            feed_all(&client_frame(8, true, b"")).unwrap(),
            vec![WsEvent::Close(None)]
        );
        assert_eq!(
            feed_all(&client_frame(8, true, &4000u16.to_be_bytes())).unwrap(),
            vec![WsEvent::Close(Some(4000))]
        );
        for code in [0u16, 1004, 1006, 1015, 1016, 2999, 5000] {
            let frame = client_frame(8, true, &code.to_be_bytes());
            assert_eq!(feed_all(&frame).unwrap_err().close_code, 1002, "{code}");
        }
    }

    #[test]
    fn a_close_reason_must_be_utf8() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice("bye ☃".as_bytes());
        assert_eq!(
            feed_all(&client_frame(8, true, &payload)).unwrap(),
            vec![WsEvent::Close(Some(1000))]
        );
        // Autobahn 7.5.1: a valid code with an invalid reason.
        payload.truncate(payload.len() - 1);
        assert_eq!(
            feed_all(&client_frame(8, true, &payload))
                .unwrap_err()
                .close_code,
            1007
        );
    }

    #[test]
    fn server_frames_are_unmasked_and_well_formed() {
        assert_eq!(text_frame("hi"), vec![0x81, 2, b'h', b'i']);
        let long = "x".repeat(300);
        let frame = text_frame(&long);
        assert_eq!(&frame[..4], &[0x81, 126, 1, 44]);
        assert_eq!(close_frame(4201, "Pong reply not received"), {
            let mut v = vec![0x88, 25, 0x10, 0x69];
            v.extend_from_slice(b"Pong reply not received");
            v
        });
        assert_eq!(close_frame(4000, &"é".repeat(100)).len(), 2 + 2 + 122);
        assert_eq!(ping_frame(), vec![0x89, 0]);
    }
}
