//! The spool: an append-only file per webhook receiver. A batch is written (`P seq body`) before
//! its first attempt and acknowledged (`A seq`) once delivered or dead-lettered; on start the
//! unacknowledged batches are sent again, in order, with the same payload (at-least-once).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// One receiver's spool file.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    next_seq: u64,
    unacked: usize,
}

/// A batch waiting in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    /// Sequence number in this spool.
    pub seq: u64,
    /// The exact request body.
    pub body: String,
}

/// Why a batch could not be spooled.
#[derive(Debug)]
pub enum SpoolError {
    /// The file would exceed its size bound.
    Full,
    /// Writing failed.
    Io(std::io::Error),
}

impl Spool {
    /// Opens (or creates) the spool at `path`, returning the batches still pending from an
    /// earlier run. The file is rewritten with just those, so it does not grow forever.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<(Spool, Vec<Spooled>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let pending = read_pending(path)?;
        let next_seq = pending.last().map_or(1, |s| s.seq + 1);
        let temp = path.with_extension("tmp");
        {
            let mut out = File::create(&temp)?;
            for spooled in &pending {
                writeln!(out, "P {} {}", spooled.seq, spooled.body)?;
            }
            out.sync_all()?;
        }
        std::fs::rename(&temp, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        let size = file.metadata()?.len();
        let unacked = pending.len();
        Ok((
            Spool {
                path: path.to_path_buf(),
                file,
                size,
                max_bytes,
                next_seq,
                unacked,
            },
            pending,
        ))
    }

    /// Writes a new batch; returns its sequence number.
    pub fn append(&mut self, body: &str) -> Result<u64, SpoolError> {
        let line = format!("P {} {}\n", self.next_seq, body);
        if self.size + line.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full);
        }
        self.write(&line).map_err(SpoolError::Io)?;
        self.unacked += 1;
        self.next_seq += 1;
        Ok(self.next_seq - 1)
    }

    /// Marks batch `seq` done; empties the file once nothing is pending.
    pub fn ack(&mut self, seq: u64) -> std::io::Result<()> {
        self.write(&format!("A {seq}\n"))?;
        self.unacked = self.unacked.saturating_sub(1);
        if self.unacked == 0 {
            self.file = File::create(&self.path)?;
            self.size = 0;
        }
        Ok(())
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        self.file.write_all(line.as_bytes())?;
        self.file.flush()?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// The `P` records without an `A` record, in order. The file is trusted for nothing: only
/// complete lines count (a torn last line, from a crash mid-write, lacks its newline and is
/// ignored, so a torn `A 12` cannot acknowledge batch 1), and a line that is not a record the
/// writer could have made is skipped (invalid UTF-8, a body that is not a JSON object, a sequence
/// number not above the ones before it), so damage costs the damaged records and never stops the
/// spool from opening.
fn read_pending(path: &Path) -> std::io::Result<Vec<Spooled>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut pending: Vec<Spooled> = Vec::new();
    let mut highest_seq = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 || line.pop() != Some(b'\n') {
            return Ok(pending);
        }
        match parse_record(&line) {
            Some(Record::Pending(spooled)) if spooled.seq > highest_seq => {
                highest_seq = spooled.seq;
                pending.push(spooled);
            }
            // `pending` is in increasing order of sequence number.
            Some(Record::Ack(seq)) => {
                if let Ok(at) = pending.binary_search_by_key(&seq, |s| s.seq) {
                    pending.remove(at);
                }
            }
            _ => {}
        }
    }
}

/// One line of the spool file.
enum Record {
    /// `P seq body`: a batch written before its first attempt.
    Pending(Spooled),
    /// `A seq`: batch `seq` is done.
    Ack(u64),
}

/// Parses a line (without its newline) as the writer formats records; `None` for anything else.
fn parse_record(line: &[u8]) -> Option<Record> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let (kind, seq, body) = (parts.next()?, parts.next()?, parts.next());
    // Digits only (no sign), and below u64::MAX: the writer always has a next number to give.
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq = seq.parse::<u64>().ok().filter(|&seq| seq < u64::MAX)?;
    match (kind, body) {
        ("P", Some(body)) if is_json_object(body) => Some(Record::Pending(Spooled {
            seq,
            body: body.to_string(),
        })),
        ("A", None) => Some(Record::Ack(seq)),
        _ => None,
    }
}

/// Whether `body` is a JSON object, as every webhook request body is.
fn is_json_object(body: &str) -> bool {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("warren-spool-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("spool.log")
    }

    #[test]
    fn pending_batches_survive_a_restart_in_order() {
        let path = temp_path("restart");
        let (mut spool, pending) = Spool::open(&path, 1 << 20).unwrap();
        assert!(pending.is_empty());
        let a = spool.append(r#"{"n":1}"#).unwrap();
        let b = spool.append(r#"{"n":2}"#).unwrap();
        let c = spool.append(r#"{"n":3}"#).unwrap();
        spool.ack(b).unwrap();
        drop(spool);
        // A torn line from a crash mid-write is ignored.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"P 9 {\"tor")
            .unwrap();
        let (mut spool, pending) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(
            pending.iter().map(|s| s.seq).collect::<Vec<_>>(),
            vec![a, c]
        );
        assert_eq!(pending[1].body, r#"{"n":3}"#);
        assert_eq!(spool.append("{}").unwrap(), c + 1);
        for seq in [a, c, c + 1] {
            spool.ack(seq).unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let (_, pending) = Spool::open(&path, 1 << 20).unwrap();
        assert!(pending.is_empty());
    }

    /// Found by tests/fuzz_spool.rs: one byte of invalid UTF-8 (a multi-byte character torn by
    /// a crash) made `open` fail, and with it the server's start; a torn `A 12` acknowledged
    /// batch 1.
    #[test]
    fn damage_costs_only_the_damaged_records() {
        let path = temp_path("damage");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut contents = Vec::new();
        for seq in 1..=12 {
            contents.extend(format!("P {seq} {{\"n\":{seq}}}\n").into_bytes());
        }
        contents.extend(b"P 13 {\"e\":\"\xc3\"}\nA 2\nP 14 [1]\nP 3 {\"late\":1}\nA +4\nA 12");
        std::fs::write(&path, &contents).unwrap();
        let (mut spool, pending) = Spool::open(&path, 1 << 20).unwrap();
        let seqs: Vec<u64> = pending.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, vec![1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(spool.append("{}").unwrap(), 13);
        std::fs::write(&path, format!("P {} {{}}\n", u64::MAX)).unwrap();
        let (_, pending) = Spool::open(&path, 1 << 20).unwrap();
        assert!(pending.is_empty());
    }

    #[test]
    fn a_full_spool_refuses() {
        let path = temp_path("full");
        let (mut spool, _) = Spool::open(&path, 30).unwrap();
        assert!(spool.append(r#"{"n":1}"#).is_ok());
        assert!(matches!(
            spool.append(r#"{"n":"a longer body"}"#),
            Err(SpoolError::Full)
        ));
    }
}
