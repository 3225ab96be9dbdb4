//! The reported-state journal: per app, what this node has told its webhook receivers and not
//! yet taken back: channels with a `channel_occupied` and no `channel_vacated` since, members
//! with a `member_added` and no `member_removed` since. A node that finds entries at start
//! stopped without sending what it owed (a crash), and can send it then
//! ([`super::Webhooks::replay_owed`]).
//!
//! File `spool_dir/app-{id}-reported.journal`, one JSON array per line: `["+", channel]`,
//! `["-", channel]`, `["+", channel, user_id]`, `["-", channel, user_id]`. Append-only; rewritten
//! with just the live entries at open and whenever it is four times their size (and over 64 KiB).
//!
//! Durability: every record is written to the file at once, so a killed process (SIGKILL, panic,
//! OOM kill) loses nothing; `fdatasync` runs at most once a second while records are unsynced and
//! at a graceful stop, so a machine crash loses at most the last second of records (the node then
//! owes a `channel_vacated` it does not know of, or sends one the receiver already had).

use ahash::AHashSet;
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What was reported: a channel (`None`) or a member of it (`Some(user_id)`).
pub type Entry = (String, Option<String>);

/// How often unsynced records are synced.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The file is compacted only when over this size...
const COMPACT_MIN_BYTES: u64 = 64 * 1024;
/// ...and this many times the size of its live entries.
const COMPACT_RATIO: u64 = 4;

/// One app's journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    live: AHashSet<Entry>,
    /// What the live entries take as `+` records (the size a compaction leaves).
    live_bytes: u64,
    size: u64,
    unsynced: bool,
    synced_at: Instant,
}

impl Journal {
    /// Opens (or creates) the journal at `path`; returns it and the entries an earlier run left
    /// (they stay live until removed).
    pub fn open(path: &Path) -> std::io::Result<(Journal, Vec<Entry>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let live = read_live(path)?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            file: OpenOptions::new().create(true).append(true).open(path)?,
            live_bytes: live.iter().map(|e| record("+", e).len() as u64).sum(),
            live,
            size: 0,
            unsynced: false,
            synced_at: Instant::now(),
        };
        journal.compact()?;
        let mut left: Vec<Entry> = journal.live.iter().cloned().collect();
        left.sort();
        Ok((journal, left))
    }

    /// Records that `entry` was reported (nothing when it already is).
    pub fn add(&mut self, entry: &Entry) -> std::io::Result<()> {
        if self.live.contains(entry) {
            return Ok(());
        }
        self.live.insert(entry.clone());
        let line = record("+", entry);
        self.live_bytes += line.len() as u64;
        self.append(&line)
    }

    /// Records that `entry` was taken back (nothing when it is not live).
    pub fn remove(&mut self, entry: &Entry) -> std::io::Result<()> {
        if !self.live.remove(entry) {
            return Ok(());
        }
        self.live_bytes -= record("+", entry).len() as u64;
        self.append(&record("-", entry))?;
        if self.size > COMPACT_MIN_BYTES && self.size > COMPACT_RATIO * self.live_bytes {
            self.compact()?;
        }
        Ok(())
    }

    /// Syncs the file if records are unsynced and the last sync is [`SYNC_EVERY`] old.
    pub fn tick(&mut self, now: Instant) -> std::io::Result<()> {
        if self.unsynced && now.duration_since(self.synced_at) >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// Syncs the file now (at a graceful stop).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        self.synced_at = Instant::now();
        Ok(())
    }

    fn append(&mut self, line: &str) -> std::io::Result<()> {
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Rewrites the file with the live entries only (temp file, fsync, rename).
    fn compact(&mut self) -> std::io::Result<()> {
        let temp = self.path.with_extension("tmp");
        let mut size = 0;
        {
            let mut out = File::create(&temp)?;
            let mut entries: Vec<&Entry> = self.live.iter().collect();
            entries.sort();
            for entry in entries {
                let line = record("+", entry);
                out.write_all(line.as_bytes())?;
                size += line.len() as u64;
            }
            out.sync_all()?;
        }
        std::fs::rename(&temp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.size = size;
        self.unsynced = false;
        Ok(())
    }
}

/// One line: `[op, channel]` or `[op, channel, user_id]`.
fn record(op: &str, (channel, user_id): &Entry) -> String {
    let mut fields = vec![Value::from(op), Value::from(channel.as_str())];
    if let Some(user_id) = user_id {
        fields.push(Value::from(user_id.as_str()));
    }
    let mut line = Value::Array(fields).to_string();
    line.push('\n');
    line
}

/// A line's operation and entry, or `None` for a torn or foreign line.
fn parse(line: &str) -> Option<(bool, Entry)> {
    let fields: Vec<String> = serde_json::from_str(line).ok()?;
    let added = match fields.first()?.as_str() {
        "+" => true,
        "-" => false,
        _ => return None,
    };
    match fields.as_slice() {
        [_, channel] => Some((added, (channel.clone(), None))),
        [_, channel, user_id] => Some((added, (channel.clone(), Some(user_id.clone())))),
        _ => None,
    }
}

/// The live entries of the journal at `path` (read only).
pub(crate) fn read_live(path: &Path) -> std::io::Result<AHashSet<Entry>> {
    let mut live = AHashSet::new();
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(live),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(file).lines() {
        match parse(&line?) {
            Some((true, entry)) => {
                live.insert(entry);
            }
            Some((false, entry)) => {
                live.remove(&entry);
            }
            None => {}
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("warren-journal-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("app-1-reported.journal")
    }

    fn channel(name: &str) -> Entry {
        (name.into(), None)
    }

    fn member(name: &str, user: &str) -> Entry {
        (name.into(), Some(user.into()))
    }

    #[test]
    fn what_was_reported_and_not_taken_back_survives_a_crash() {
        let path = temp_path("crash");
        let (mut journal, left) = Journal::open(&path).unwrap();
        assert!(left.is_empty());
        journal.add(&channel("a")).unwrap();
        journal.add(&channel("b")).unwrap();
        journal.add(&member("presence-p", "u \"1\"")).unwrap();
        journal.add(&member("presence-p", "u2")).unwrap();
        journal.remove(&channel("b")).unwrap();
        journal.remove(&member("presence-p", "u2")).unwrap();
        // No sync, no drop: the process is killed with the records only written.
        std::mem::forget(journal);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"[\"+\",\"torn")
            .unwrap();
        let (mut journal, left) = Journal::open(&path).unwrap();
        assert_eq!(left, vec![channel("a"), member("presence-p", "u \"1\"")]);
        journal.remove(&channel("a")).unwrap();
        journal.remove(&member("presence-p", "u \"1\"")).unwrap();
        journal.sync().unwrap();
        drop(journal);
        let (_, left) = Journal::open(&path).unwrap();
        assert!(left.is_empty());
    }

    #[test]
    fn churn_is_compacted_away() {
        let path = temp_path("churn");
        let (mut journal, _) = Journal::open(&path).unwrap();
        journal.add(&channel("stays")).unwrap();
        for n in 0..20_000 {
            let entry = channel(&format!("channel-{n}"));
            journal.add(&entry).unwrap();
            journal.remove(&entry).unwrap();
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= COMPACT_MIN_BYTES + 100, "{size} bytes");
        drop(journal);
        let (_, left) = Journal::open(&path).unwrap();
        assert_eq!(left, vec![channel("stays")]);
    }
}
