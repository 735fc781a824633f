//! The durable outbox worker: sends queued mail with retry and exponential backoff, survives restarts.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::state::AppState;

/// Longest wait between two attempts of one mail.
const MAX_BACKOFF: u64 = 300;

/// Seconds to wait after `attempts` failures: 2, 4, 8 … capped at five minutes.
pub fn backoff(attempts: u32) -> u64 {
    2u64.saturating_pow(attempts.min(16)).min(MAX_BACKOFF)
}

/// Runs until `shutdown` turns true. Wakes when mail is queued, and at least every second.
pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match deliver_due(&state).await {
            // More is waiting: go again without sleeping.
            Ok(n) if n == BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "outbox: cannot read the queue"),
        }
        tokio::select! {
            _ = state.outbox_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Mails taken per pass; a full batch means "go again at once".
pub const BATCH: usize = 256;

/// One pass over the queue: sends up to [`BATCH`] due mails, `email.smtp.max_connections` at a time; reschedules
/// failures with backoff; drops mail for expired challenges. Returns how many it handled.
pub async fn deliver_due(state: &AppState) -> Result<usize, crate::store::StoreError> {
    let now = state.clock.now();
    let mailer = state.mailer.load_full();
    let from = state.config().email.from.clone();
    let due = state.store.outbox_due(now, BATCH)?;
    let handled = due.len();
    futures_util::stream::iter(due)
        .for_each_concurrent(mailer.parallelism(), |(id, mut item)| {
            let (mailer, from) = (&mailer, &from);
            async move {
                let outcome = if item.expires_at <= now {
                    tracing::warn!(to = %state.mask(&item.to), attempts = item.attempts, "outbox: dropping mail for an expired sign-in");
                    state.metrics.mail_failed();
                    state.store.remove_mail(id)
                } else {
                    match mailer.send(from, &item).await {
                        Ok(()) => {
                            state.metrics.mail_sent();
                            tracing::info!(to = %state.mask(&item.to), attempts = item.attempts + 1, "mail sent");
                            state.store.remove_mail(id)
                        }
                        Err(e) => {
                            item.attempts += 1;
                            state.metrics.mail_retries();
                            item.next_attempt_at = now + backoff(item.attempts);
                            item.last_error = Some(e.to_string());
                            tracing::warn!(to = %state.mask(&item.to), attempts = item.attempts, retry_in_s = backoff(item.attempts), error = %e, "mail not sent; will retry");
                            state.store.update_mail(id, &item)
                        }
                    }
                };
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "outbox: cannot update the queue");
                }
            }
        })
        .await;
    Ok(handled)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(super::backoff(1), 2);
        assert_eq!(super::backoff(3), 8);
        assert_eq!(super::backoff(30), 300);
    }
}
