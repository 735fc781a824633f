//! Background upkeep: writes batched `last_seen` updates, deletes expired challenges and sessions, and keeps the pending-challenge count of `login.max_pending` in step with the store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::state::AppState;
use crate::store::{StoreError, SWEEP_PERIOD};

/// How often pending activity is written.
const TOUCH_FLUSH: Duration = Duration::from_secs(10);
/// How often expired records are swept: every [`SWEEP_PERIOD`], in ticks of [`TOUCH_FLUSH`].
const SWEEP_EVERY: u32 = (SWEEP_PERIOD.as_secs() / TOUCH_FLUSH.as_secs()) as u32;

/// Deletes expired challenges and sessions, then re-counts the challenges left for the pending
/// cap. Returns (challenges, sessions) removed. A pass over every record: run it as a task of
/// its own.
pub async fn sweep_once(state: &AppState) -> Result<(usize, usize), StoreError> {
    let cfg = state.config();
    // A session may be in use on any route: only the longest idle timeout any route grants
    // (none at all if one disables it) may end it here; each request still applies its own.
    let swept = state
        .store
        .sweep(
            state.clock.now(),
            cfg.longest_idle_timeout().map(|d| d.as_secs()),
        )
        .await?;
    recount(state).await;
    Ok(swept)
}

/// Sets the pending count to the challenges in the store. Sign-ins admitted while counting are
/// added on top (they may be counted twice until the next sweep: never too few).
async fn recount(state: &AppState) {
    let before = state.limiter.pending();
    let stored = state.store.challenge_count().await;
    state.limiter.rebase_pending(before, stored);
}

/// Runs until `shutdown` turns true.
pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    recount(&state).await;
    let mut tick = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TOUCH_FLUSH) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = state.store.flush_touches().await {
            tracing::error!(error = %e, "cannot write session activity");
        }
        tick += 1;
        if tick % SWEEP_EVERY == 0 {
            let current = state.jwt.load().created_at;
            if current + crate::jwt::ROTATE_AFTER <= state.clock.now() {
                state
                    .jwt
                    .store(crate::jwt::keys_at(&state.master, state.clock.now()));
                tracing::info!("rotated the JWT signing key");
            }
            let st = state.clone();
            let swept = tokio::spawn(async move { sweep_once(&st).await }).await;
            match swept {
                Ok(Ok((c, s))) if c + s > 0 => {
                    tracing::info!(challenges = c, sessions = s, "swept expired records")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "sweep failed"),
                Err(e) => tracing::error!(error = %e, "sweep task failed"),
            }
        }
    }
}
