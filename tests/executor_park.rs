//! The executor never parks while a task queue is runnable: the fix carried in
//! `vendor/glommio` (see its PATCHES.md). The shard's fan-out runs in a task queue with a short
//! latency requirement; with the published glommio 0.9.0, a preempt timer that expired before
//! the first queue ran made the executor park with runnable queues and sleep until some
//! unrelated event, which left a fan-out half written.

use std::time::{Duration, Instant};

/// Work a task does between yields: longer than the preempt timer, so that it fires every
/// time.
const BUSY: Duration = Duration::from_micros(20);

/// A latency requirement as short as the work between yields, so that the preempt timer often
/// expires before the executor looks at its queues, which is when the published crate parked
/// (after ~5,000 slices, in every run tried, at 1 ns, 2 µs and 20 µs).
const SHORT_LATENCY: Duration = Duration::from_micros(20);

/// Runs `rounds` busy slices that yield when glommio asks, in a queue with `SHORT_LATENCY`,
/// and returns whether they all ran within `limit`.
fn busy_queue_finishes(rounds: u32, limit: Duration) -> bool {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let handle = glommio::LocalExecutorBuilder::default()
        .name("park-test")
        .spawn(move || async move {
            let queue = glommio::executor().create_task_queue(
                glommio::Shares::default(),
                glommio::Latency::Matters(SHORT_LATENCY),
                "busy",
            );
            let busy = glommio::spawn_local_into(
                async move {
                    for _ in 0..rounds {
                        let start = Instant::now();
                        while start.elapsed() < BUSY {
                            std::hint::spin_loop();
                        }
                        glommio::yield_if_needed().await;
                    }
                },
                queue,
            )
            .expect("spawn into the busy queue");
            busy.await;
            let _ = done_tx.send(());
        })
        .expect("start the executor");
    let finished = done_rx.recv_timeout(limit).is_ok();
    if finished {
        handle.join().expect("the executor ends");
    }
    // A hung executor thread is left behind: the test process ends with the test.
    finished
}

#[test]
fn a_preempted_executor_runs_its_queues_instead_of_parking() {
    // 20,000 preemptions; a fraction of a second of work when nothing parks.
    assert!(
        busy_queue_finishes(20_000, Duration::from_secs(20)),
        "the executor parked with a runnable task queue (see vendor/glommio/PATCHES.md)"
    );
}
