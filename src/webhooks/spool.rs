//! The spool: an append-only file per webhook receiver, and the receiver's only queue. A batch is
//! written (`P seq body`) when the dispatcher hands it over and acknowledged (`A seq`) once
//! delivered or dead-lettered; the delivery thread reads the batches back from the file in order
//! (nothing but the batch in flight is held in memory). On start the unacknowledged batches are
//! sent again, in order, with the same payload (at-least-once).
//!
//! The file is emptied whenever nothing is pending, and compacted (the delivered head cut off)
//! once it is over half its bound and more than half of it is behind the reader.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One receiver's spool file.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    reader: BufReader<File>,
    read_offset: u64,
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
    /// Opens (or creates) the spool at `path`. The file is rewritten with just the batches still
    /// pending from an earlier run (so it does not grow forever); they are the first ones
    /// [`Spool::next_unread`] returns.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Spool> {
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
        Ok(Spool {
            path: path.to_path_buf(),
            reader: BufReader::new(File::open(path)?),
            file,
            read_offset: 0,
            size,
            max_bytes,
            next_seq,
            unacked: pending.len(),
        })
    }

    /// Batches written and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
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

    /// The next batch after the ones already read, if one has been written.
    pub fn next_unread(&mut self) -> std::io::Result<Option<Spooled>> {
        let mut line = String::new();
        while self.read_offset < self.size {
            line.clear();
            let read = self.reader.read_line(&mut line)?;
            if read == 0 {
                return Ok(None);
            }
            self.read_offset += read as u64;
            if let Some(Record::Pending(spooled)) =
                parse_record(line.trim_end_matches('\n').as_bytes())
            {
                return Ok(Some(spooled));
            }
        }
        Ok(None)
    }

    /// Marks batch `seq` done (it must have been read); empties the file once nothing is
    /// pending, and compacts it when most of it is behind the reader.
    pub fn ack(&mut self, seq: u64) -> std::io::Result<()> {
        self.write(&format!("A {seq}\n"))?;
        self.unacked = self.unacked.saturating_sub(1);
        if self.unacked == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            self.rewind_reader(0)?;
        } else if self.size > self.max_bytes / 2 && self.read_offset > self.size / 2 {
            self.compact()?;
        }
        Ok(())
    }

    /// Cuts off the part behind the reader: every batch there has been acknowledged (they are
    /// delivered one at a time, in file order, and this runs right after an acknowledgement).
    fn compact(&mut self) -> std::io::Result<()> {
        let temp = self.path.with_extension("tmp");
        {
            let mut from = File::open(&self.path)?;
            from.seek(SeekFrom::Start(self.read_offset))?;
            let mut out = File::create(&temp)?;
            std::io::copy(&mut from, &mut out)?;
            out.sync_all()?;
        }
        std::fs::rename(&temp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.size = self.file.metadata()?.len();
        self.reader = BufReader::new(File::open(&self.path)?);
        self.read_offset = 0;
        Ok(())
    }

    fn rewind_reader(&mut self, offset: u64) -> std::io::Result<()> {
        self.reader = BufReader::new(File::open(&self.path)?);
        self.reader.seek(SeekFrom::Start(offset))?;
        self.read_offset = offset;
        Ok(())
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        self.file.write_all(line.as_bytes())?;
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

    fn drain(spool: &mut Spool) -> Vec<u64> {
        std::iter::from_fn(|| spool.next_unread().unwrap())
            .map(|s| s.seq)
            .collect()
    }

    #[test]
    fn pending_batches_survive_a_restart_in_order() {
        let path = temp_path("restart");
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(spool.unacked(), 0);
        let a = spool.append(r#"{"n":1}"#).unwrap();
        let b = spool.append(r#"{"n":2}"#).unwrap();
        let c = spool.append(r#"{"n":3}"#).unwrap();
        for expected in [a, b] {
            assert_eq!(spool.next_unread().unwrap().unwrap().seq, expected);
        }
        spool.ack(b).unwrap();
        drop(spool);
        // A torn line from a crash mid-write is ignored.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"P 9 {\"tor")
            .unwrap();
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(spool.unacked(), 2);
        let resent: Vec<Spooled> = std::iter::from_fn(|| spool.next_unread().unwrap()).collect();
        assert_eq!(resent.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![a, c]);
        assert_eq!(resent[1].body, r#"{"n":3}"#);
        assert_eq!(spool.append("{}").unwrap(), c + 1);
        assert_eq!(drain(&mut spool), vec![c + 1]);
        for seq in [a, c, c + 1] {
            spool.ack(seq).unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(spool.unacked(), 0);
    }

    #[test]
    fn a_full_spool_refuses() {
        let path = temp_path("full");
        let mut spool = Spool::open(&path, 30).unwrap();
        assert!(spool.append(r#"{"n":1}"#).is_ok());
        assert!(matches!(
            spool.append(r#"{"n":"a longer body"}"#),
            Err(SpoolError::Full)
        ));
    }

    #[test]
    fn the_reader_follows_appends_and_compaction_keeps_the_unread_tail() {
        let path = temp_path("compact");
        let mut spool = Spool::open(&path, 400).unwrap();
        let mut delivered = Vec::new();
        let mut next = 0;
        // Steady traffic with always one batch waiting: the file never empties, so only
        // compaction keeps it under its bound.
        for round in 0..200 {
            while spool.append(&format!("{{\"n\":{round}}}")).is_ok() {
                next += 1;
                if spool.unacked() >= 2 {
                    break;
                }
            }
            let batch = spool.next_unread().unwrap().expect("a batch to read");
            delivered.push(batch.seq);
            spool.ack(batch.seq).unwrap();
            assert!(spool.size() <= 400);
        }
        assert_eq!(delivered, (1..=200).collect::<Vec<u64>>());
        assert!(next >= 200);
        drop(spool);
        let mut spool = Spool::open(&path, 400).unwrap();
        assert_eq!(drain(&mut spool), vec![201]);
    }
}
