//! Fuzzing the webhook spool reader (`webhooks::spool::Spool::open`), which trusts nothing in
//! the file an earlier run (or a crash, or a disk) left behind: arbitrary contents never make
//! it panic or fail, and never yield a corrupt batch; a spool written by `Spool` and torn
//! anywhere in its last line gives back exactly the batches still owed.

mod fuzz_support;

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use warren::webhooks::spool::{Spool, Spooled};

/// A fresh spool path for one case.
fn spool_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "warren-fuzz-spool-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("spool.log")
}

/// Opens the spool at `path` and reads back every batch it holds (the ones still owed).
fn open_pending(path: &std::path::Path) -> std::io::Result<(Spool, Vec<Spooled>)> {
    let mut spool = Spool::open(path, 1 << 20)?;
    let mut pending = Vec::new();
    while let Some(spooled) = spool.next_unread()? {
        pending.push(spooled);
    }
    Ok((spool, pending))
}

/// Opens a spool over `contents`; returns what it found pending and then removes it.
fn open_over(contents: &[u8]) -> Vec<Spooled> {
    let path = spool_path();
    std::fs::write(&path, contents).unwrap();
    let (spool, pending) = open_pending(&path).expect("any contents can be opened");
    drop(spool);
    // What open rewrote reads back the same.
    let (_, again) = open_pending(&path).expect("the rewritten spool opens");
    assert_eq!(again, pending, "reopening changed what is pending");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    pending
}

/// A webhook request body as the dispatcher writes it.
fn body() -> impl Strategy<Value = String> {
    ("[a-z_]{1,16}", "[ -~é☃\n\"\\\\]{0,24}", any::<u32>()).prop_map(|(name, channel, time)| {
        serde_json::json!({"time_ms": time, "events": [{"name": name, "channel": channel}]})
            .to_string()
    })
}

/// A spool line: records as the writer makes them, records with damage, or noise.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let seq = prop_oneof![4 => 1u64..20, 1 => any::<u64>(), 1 => Just(u64::MAX)];
    prop_oneof![
        4 => (seq.clone(), body()).prop_map(|(s, b)| format!("P {s} {b}\n").into_bytes()),
        3 => seq.clone().prop_map(|s| format!("A {s}\n").into_bytes()),
        1 => (seq, "[ -~]{0,20}").prop_map(|(s, b)| format!("P {s} {b}\n").into_bytes()),
        1 => "[PA ]{0,3}[0-9+-]{0,4}[ -~]{0,12}\n".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..30),
    ]
}

/// Whether `pending` is something the reader may return for `contents`: each batch is a
/// complete `P` line of the file whose body is a JSON object, not acknowledged by a later
/// complete `A` line, and the sequence numbers increase (the writer's order) and leave room for
/// the next.
fn check_pending(contents: &[u8], pending: &[Spooled]) -> Result<(), TestCaseError> {
    let complete_lines: Vec<&[u8]> = match contents.iter().rposition(|&b| b == b'\n') {
        Some(end) => contents[..end].split(|&b| b == b'\n').collect(),
        None => Vec::new(),
    };
    let mut last_seq = 0;
    for spooled in pending {
        prop_assert!(
            spooled.seq > last_seq || last_seq == 0,
            "out of order: {pending:?}"
        );
        prop_assert!(spooled.seq < u64::MAX);
        last_seq = spooled.seq;
        prop_assert!(matches!(
            serde_json::from_str::<serde_json::Value>(&spooled.body),
            Ok(serde_json::Value::Object(_))
        ));
        let record = format!("P {} {}", spooled.seq, spooled.body);
        let at = complete_lines.iter().position(|l| *l == record.as_bytes());
        prop_assert!(
            at.is_some(),
            "{record:?} is not a complete line of the file"
        );
        let ack = format!("A {}", spooled.seq);
        prop_assert!(
            !complete_lines[at.unwrap()..].contains(&ack.as_bytes()),
            "{record:?} was acknowledged"
        );
    }
    Ok(())
}

/// A writer's step.
#[derive(Debug, Clone)]
enum Op {
    Append(String),
    /// Acknowledge the pending batch at this index (modulo their count).
    Ack(prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => body().prop_map(Op::Append),
        2 => any::<prop::sample::Index>().prop_map(Op::Ack),
    ]
}

proptest! {
    #![proptest_config(fuzz_support::config(120))]

    #[test]
    fn arbitrary_contents_open_and_yield_no_corrupt_batch(
        contents in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let pending = open_over(&contents);
        check_pending(&contents, &pending)?;
    }

    #[test]
    fn damaged_records_yield_no_corrupt_batch(lines in prop::collection::vec(line(), 0..16)) {
        let contents = lines.concat();
        let pending = open_over(&contents);
        check_pending(&contents, &pending)?;
    }

    #[test]
    fn a_spool_torn_in_its_last_line_gives_back_what_is_owed(
        ops in prop::collection::vec(op(), 1..24),
        tear in any::<prop::sample::Index>(),
    ) {
        let path = spool_path();
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        let mut owed: BTreeMap<u64, String> = BTreeMap::new();
        // What is owed if the last write is lost: before the last operation.
        let mut owed_before_last = owed.clone();
        for op in &ops {
            owed_before_last = owed.clone();
            match op {
                Op::Append(body) => {
                    let seq = spool.append(body).unwrap();
                    owed.insert(seq, body.clone());
                }
                Op::Ack(index) if !owed.is_empty() => {
                    let seq = *owed.keys().nth(index.index(owed.len())).unwrap();
                    spool.ack(seq).unwrap();
                    owed.remove(&seq);
                }
                Op::Ack(_) => owed_before_last = owed.clone(),
            }
        }
        drop(spool);
        // A crash during the last write leaves any prefix of its line.
        let contents = std::fs::read(&path).unwrap();
        let last_line_start = contents[..contents.len().saturating_sub(1)]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let cut = last_line_start + tear.index(contents.len() - last_line_start + 1);
        std::fs::write(&path, &contents[..cut]).unwrap();
        let (_, pending) = open_pending(&path).unwrap();
        let got: BTreeMap<u64, String> = pending.into_iter().map(|s| (s.seq, s.body)).collect();
        if cut == contents.len() {
            prop_assert_eq!(got, owed);
        } else {
            // The torn write did not happen: a torn append is not owed (it was never sent),
            // a torn acknowledgement leaves its batch owed (sent again: at least once).
            prop_assert_eq!(got, owed_before_last, "cut {} of {:?}", cut, String::from_utf8_lossy(&contents));
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
