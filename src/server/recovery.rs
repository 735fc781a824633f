//! Keeps retrying a store that cannot write (full disk, I/O error) or cannot be reached (Redis down, failover) until it works again, without a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::state::AppState;

/// How often the store's health is looked at, and the first retry after a failure.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// The longest wait between two retries (each failed retry doubles the wait up to this).
pub const RETRY_AT_MOST: Duration = Duration::from_secs(8);

/// Runs until `shutdown` turns true.
pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut wait = CHECK_EVERY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if state.store.writable() {
            wait = CHECK_EVERY;
            continue;
        }
        let recovered = if state.store.sled().is_some() {
            // Reopening sled blocks (it waits for readers of the old database to let go).
            let st = state.clone();
            tokio::task::spawn_blocking(move || st.store.sled().is_some_and(|s| s.recover()))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "store recovery task failed");
                    false
                })
        } else {
            // A shared store reconnects on use; this makes sure it is tried while idle too.
            state.store.check().await.is_ok()
        };
        wait = if recovered {
            CHECK_EVERY
        } else {
            (wait * 2).min(RETRY_AT_MOST)
        };
    }
}
