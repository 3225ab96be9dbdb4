//! Socket ids: `"<random>.<sequence>"`, unique per node, in the `^\d+\.\d+$` form every SDK
//! requires (PROTOCOL.md §1.2). The low bits of the sequence name the shard that owns the socket,
//! so any shard can route work for a socket id without a lookup table.

use std::fmt;

/// Bits of the sequence part that hold the owning shard's index.
const SHARD_BITS: u32 = 10;

/// A parsed socket id. Compares as two integers, which is what the fan-out loop does to skip the
/// excluded socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId {
    /// Random part, chosen per connection.
    pub random: u32,
    /// Sequence part: a per-shard counter shifted left, ORed with the shard index.
    pub sequence: u64,
}

impl SocketId {
    /// The id of the `counter`-th connection of `shard`, with a fresh random part.
    pub fn new(shard: usize, counter: u64, random: u32) -> Self {
        SocketId {
            random,
            sequence: (counter << SHARD_BITS) | shard as u64,
        }
    }

    /// The shard that owns this socket.
    pub fn shard(&self) -> usize {
        (self.sequence & ((1 << SHARD_BITS) - 1)) as usize
    }

    /// The per-shard connection counter this id was made from.
    pub fn counter(&self) -> u64 {
        self.sequence >> SHARD_BITS
    }

    /// Parses the `\d+\.\d+` form; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let (a, b) = text.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        Some(SocketId {
            random: a.parse().ok()?,
            sequence: b.parse().ok()?,
        })
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.random, self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_its_shard() {
        let id = SocketId::new(7, 12345, 987654321);
        let text = id.to_string();
        assert!(text.split_once('.').is_some());
        assert_eq!(SocketId::parse(&text), Some(id));
        assert_eq!(id.shard(), 7);
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "a.1",
            "1.2.3",
            "-1.2",
            "1.2 ",
            "99999999999.1",
        ] {
            assert_eq!(SocketId::parse(bad), None, "{bad:?}");
        }
    }
}
