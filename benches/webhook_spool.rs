//! Cost of the webhook spool per batch: one `P` record appended when the batch is handed over,
//! read back by the delivery thread (the spool is the queue), and one `A` record after (written
//! to the file, not fsynced).

use criterion::{criterion_group, criterion_main, Criterion};
use warren::webhooks::spool::Spool;

fn spool(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("warren-bench-spool-{}", std::process::id()));
    let path = dir.join("bench.spool");
    let mut spool = Spool::open(&path, u64::MAX).expect("spool opens");
    let body = r#"{"time_ms":1795450000000,"events":[{"name":"client_event","channel":"private-chat","event":"client-typing","data":"{\"x\":1}","socket_id":"123456.7890"}]}"#;
    c.bench_function("spool append + read back + ack (one batch)", |b| {
        b.iter(|| {
            spool.append(body).expect("append");
            let batch = spool.next_unread().expect("read").expect("a batch");
            spool.ack(batch.seq).expect("ack");
        })
    });
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, spool);
criterion_main!(benches);
