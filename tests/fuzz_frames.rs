//! Fuzzing the WebSocket frame decoder (`ws::frame::FrameDecoder`), which reads every byte a
//! client sends after the upgrade: random bytes and random frame sequences (any opcode, flags,
//! mask, length encoding), delivered in random chunkings. It never panics, it gives the same
//! events and the same close code however the bytes are cut, and well-formed messages come out
//! exactly as sent.

mod fuzz_support;

use fuzz_support::{chunks, cuts};
use proptest::prelude::*;
use warren::ws::frame::{FrameDecoder, FrameError, WsEvent};

/// The message limit the decoder is run with: small, so that 1009 is reachable.
const MAX_MESSAGE: usize = 300;

/// What a connection sees: the events decoded until the first error, the error, and whether the
/// decoder holds nothing afterwards (only meaningful without an error).
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<WsEvent>,
    error: Option<FrameError>,
    idle: bool,
}

/// Feeds `pieces` in order, stopping at the first error as the connection does.
fn decode(pieces: &[&[u8]]) -> Outcome {
    let mut decoder = FrameDecoder::default();
    let mut events = Vec::new();
    for piece in pieces {
        if let Err(error) = decoder.feed(piece, MAX_MESSAGE, &mut events) {
            return Outcome {
                events,
                error: Some(error),
                idle: false,
            };
        }
    }
    Outcome {
        events,
        error: None,
        idle: decoder.is_idle(),
    }
}

/// One frame with every header field chosen freely.
#[derive(Debug, Clone)]
struct RawFrame {
    first_byte: u8,
    mask: Option<[u8; 4]>,
    /// 0: shortest length form, 1: 16-bit, 2: 64-bit.
    length_form: u8,
    payload: Vec<u8>,
}

impl RawFrame {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.first_byte);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let n = self.payload.len();
        match self.length_form {
            0 if n < 126 => out.push(mask_bit | n as u8),
            0 | 1 if n < 65536 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match self.mask {
            Some(mask) => {
                out.extend_from_slice(&mask);
                out.extend(
                    self.payload
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ mask[i & 3]),
                );
            }
            None => out.extend_from_slice(&self.payload),
        }
    }
}

fn raw_frame() -> impl Strategy<Value = RawFrame> {
    // Mostly plausible frames (FIN or not, no RSV, a known opcode, masked), sometimes anything.
    let plausible_first = (
        any::<bool>(),
        prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]),
    )
        .prop_map(|(fin, op)| if fin { 0x80 | op } else { op });
    let first_byte = prop_oneof![8 => plausible_first, 1 => any::<u8>()];
    let mask = prop_oneof![9 => any::<[u8; 4]>().prop_map(Some), 1 => Just(None)];
    let payload = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..40),
        2 => "[ -~é☃]{0,40}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 100..400),
    ];
    (first_byte, mask, 0u8..3, payload).prop_map(|(first_byte, mask, length_form, payload)| {
        RawFrame {
            first_byte,
            mask,
            length_form,
            payload,
        }
    })
}

/// A close frame's payload: a code from around the valid and invalid ranges and a reason that
/// is UTF-8 or not.
fn close_payload() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![
        prop::sample::select(vec![
            0u16, 999, 1000, 1001, 1003, 1004, 1005, 1006, 1007, 1011, 1014, 1015, 1016, 2999,
            3000, 4999, 5000, 65535
        ]),
        any::<u16>(),
    ];
    let reason = prop_oneof![
        "[ -~é☃]{0,20}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..20),
    ];
    (code, reason).prop_map(|(code, reason)| {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend(reason);
        payload
    })
}

/// A frame sequence with bytes of noise sometimes spliced in.
fn frame_sequence() -> impl Strategy<Value = Vec<u8>> {
    let close = (any::<[u8; 4]>(), close_payload()).prop_map(|(mask, payload)| RawFrame {
        first_byte: 0x88,
        mask: Some(mask),
        length_form: 0,
        payload,
    });
    let frame = prop_oneof![6 => raw_frame(), 1 => close];
    let noise = prop::collection::vec(any::<u8>(), 1..4);
    let piece = prop_oneof![10 => frame.prop_map(|f| { let mut out = Vec::new(); f.encode(&mut out); out }), 1 => noise];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// A well-formed message and the event it must decode to.
#[derive(Debug, Clone)]
enum Message {
    Text(String, usize),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ("[ -~é☃\u{10348}]{0,60}", 1usize..5).prop_map(|(t, n)| Message::Text(t, n)),
        prop::collection::vec(any::<u8>(), 0..60).prop_map(Message::Binary),
        prop::collection::vec(any::<u8>(), 0..126).prop_map(Message::Ping),
        prop::collection::vec(any::<u8>(), 0..126).prop_map(Message::Pong),
    ]
}

fn masked(first_byte: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    RawFrame {
        first_byte,
        mask: Some(mask),
        length_form: 0,
        payload: payload.to_vec(),
    }
    .encode(out);
}

/// Encodes `messages` (text split into fragments at arbitrary byte offsets, with a ping between
/// fragments) and returns the bytes with the events they must produce.
fn encode_messages(messages: &[Message], mask: [u8; 4]) -> (Vec<u8>, Vec<WsEvent>) {
    let mut bytes = Vec::new();
    let mut events = Vec::new();
    for message in messages {
        match message {
            Message::Text(text, pieces) => {
                let raw = text.as_bytes();
                let step = raw.len() / pieces + 1;
                let parts: Vec<&[u8]> = raw.chunks(step).collect();
                let parts = if parts.is_empty() { vec![raw] } else { parts };
                for (i, part) in parts.iter().enumerate() {
                    let opcode = if i == 0 { 1 } else { 0 };
                    let fin = if i + 1 == parts.len() { 0x80 } else { 0 };
                    masked(fin | opcode, part, mask, &mut bytes);
                    if fin == 0 {
                        masked(0x89, b"mid", mask, &mut bytes);
                        events.push(WsEvent::Ping(b"mid".to_vec()));
                    }
                }
                events.push(WsEvent::Text(text.clone()));
            }
            Message::Binary(data) => {
                masked(0x82, data, mask, &mut bytes);
                events.push(WsEvent::Binary);
            }
            Message::Ping(data) => {
                masked(0x89, data, mask, &mut bytes);
                events.push(WsEvent::Ping(data.clone()));
            }
            Message::Pong(data) => {
                masked(0x8A, data, mask, &mut bytes);
                events.push(WsEvent::Pong);
            }
        }
    }
    (bytes, events)
}

proptest! {
    #![proptest_config(fuzz_support::config(400))]

    #[test]
    fn random_bytes_decode_the_same_however_they_are_cut(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in cuts(),
    ) {
        prop_assert_eq!(decode(&chunks(&bytes, &cuts)), decode(&[&bytes]));
    }

    #[test]
    fn random_frame_sequences_decode_the_same_however_they_are_cut(
        bytes in frame_sequence(),
        cuts in cuts(),
    ) {
        let whole = decode(&[&bytes]);
        prop_assert_eq!(decode(&chunks(&bytes, &cuts)), whole);
    }

    #[test]
    fn well_formed_messages_come_out_exactly_as_sent(
        messages in prop::collection::vec(message(), 0..10),
        mask in any::<[u8; 4]>(),
        cuts in cuts(),
    ) {
        let (bytes, expected) = encode_messages(&messages, mask);
        let outcome = decode(&chunks(&bytes, &cuts));
        prop_assert_eq!(outcome, Outcome { events: expected, error: None, idle: true });
    }
}
