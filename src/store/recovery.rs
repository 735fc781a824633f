//! Keeps retrying a store that cannot write (full disk, I/O error) until it writes again, without a restart.

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
        let st = state.clone();
        match tokio::task::spawn_blocking(move || st.store.recover()).await {
            Ok(true) => wait = CHECK_EVERY,
            Ok(false) => wait = (wait * 2).min(RETRY_AT_MOST),
            Err(e) => tracing::error!(error = %e, "store recovery task failed"),
        }
    }
}
