//! Background upkeep: writes batched `last_seen` updates and deletes expired challenges and sessions.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::state::AppState;

/// How often pending activity is written.
const TOUCH_FLUSH: Duration = Duration::from_secs(10);
/// How often expired records are swept (every sixth tick).
const SWEEP_EVERY: u32 = 6;

/// Runs until `shutdown` turns true.
pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TOUCH_FLUSH) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = state.store.flush_touches() {
            tracing::error!(error = %e, "cannot write session activity");
        }
        tick += 1;
        if tick % SWEEP_EVERY == 0 {
            let current = state.jwt.load().created_at;
            if current + crate::jwt::ROTATE_AFTER <= state.clock.now() {
                match crate::jwt::load_or_rotate(&state.store, state.clock.now()) {
                    Ok(k) => {
                        tracing::info!("rotated the JWT signing key");
                        state.jwt.store(k);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot rotate the JWT signing key"),
                }
            }
            let st = state.clone();
            let swept = tokio::task::spawn_blocking(move || {
                let cfg = st.config();
                st.store.sweep(
                    st.clock.now(),
                    cfg.session.idle_timeout.map(|d| d.as_secs()),
                )
            })
            .await;
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
