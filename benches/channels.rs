//! The channel table at scale: subscribe and unsubscribe with one million channels in the
//! table, and walking 10k / 100k subscribers of one channel handing each the shared frame (the
//! fan-out loop's bookkeeping, without the `send(2)` that the load harness measures with real
//! sockets).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use std::rc::Rc;
use std::sync::Arc;
use warren::channels::table::ChannelTable;

/// Stands in for a connection: what the fan-out loop touches per subscriber.
struct Subscriber {
    queued: std::cell::Cell<usize>,
}

fn table_with_channels(n: u64) -> ChannelTable<Rc<Subscriber>> {
    let mut table = ChannelTable::new(1);
    let subscriber = Rc::new(Subscriber {
        queued: Default::default(),
    });
    for i in 0..n {
        table.subscribe(0, &format!("channel-{i}"), i, subscriber.clone());
    }
    table
}

fn subscribe_at_1m(c: &mut Criterion) {
    let mut table = table_with_channels(1_000_000);
    let subscriber = Rc::new(Subscriber {
        queued: Default::default(),
    });
    let mut i = 0u64;
    c.bench_function(
        "subscribe + unsubscribe a new channel (1M channels in the table)",
        |b| {
            b.iter(|| {
                i += 1;
                let name = format!("fresh-{i}");
                table.subscribe(0, &name, 2_000_000 + i, subscriber.clone());
                table.unsubscribe(0, &name, 2_000_000 + i)
            })
        },
    );
}

fn walk_subscribers(c: &mut Criterion) {
    for n in [10_000u64, 100_000] {
        let mut table = ChannelTable::new(1);
        for i in 0..n {
            table.subscribe(
                0,
                "big",
                i,
                Rc::new(Subscriber {
                    queued: Default::default(),
                }),
            );
        }
        let frame: Arc<[u8]> = vec![0u8; 128].into();
        c.bench_function(
            &format!("fan-out bookkeeping to {n} local subscribers"),
            |b| {
                b.iter_batched(
                    || Vec::with_capacity(n as usize),
                    |mut queued: Vec<Arc<[u8]>>| {
                        for subscriber in table.get(0, "big").expect("present").subscribers() {
                            subscriber.queued.set(subscriber.queued.get() + 1);
                            queued.push(frame.clone());
                        }
                        black_box(queued.len())
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
}

criterion_group!(benches, subscribe_at_1m, walk_subscribers);
criterion_main!(benches);
