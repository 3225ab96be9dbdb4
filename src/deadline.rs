//! One helper for every deadline a task keeps: a future raced against a glommio timer.

use std::future::Future;
use std::time::Duration;

/// Runs `future` for at most `limit`; `None` when the limit came first (the future is dropped).
pub async fn with_timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
