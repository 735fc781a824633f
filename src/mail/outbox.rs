//! The durable outbox worker: mints each mail's link and code at send time (the queue holds no
//! secret), sends with retry and exponential backoff, survives restarts.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::auth::challenge::{self, Mint, Minted};
use crate::mail::templates::SignInMail;
use crate::mail::Outgoing;
use crate::state::AppState;
use crate::store::OutboxItem;

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
            Ok(n) if n >= pass_size(&state) => continue,
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

/// Most mails taken per pass; a full pass means "go again at once".
pub const BATCH: usize = 256;

/// The longest one send may take before it counts as failed (and is retried): well inside the
/// lease ([`crate::store::MAIL_LEASE_SECS`]) a claimed mail stays this worker's, so no other
/// worker takes it over while it may still go out.
pub const SEND_AT_MOST: Duration = Duration::from_secs(20);

/// Mails claimed per pass: as many as are sent at once, so a pass (one round of concurrent
/// sends, each at most [`SEND_AT_MOST`]) ends before the claims' lease does.
/// Local transports (log, file) do not wait on a server: a whole batch per pass.
fn pass_size(state: &AppState) -> usize {
    match &**state.mailer.load() {
        crate::mail::Mailer::Smtp(..) => state.mailer.load().parallelism().clamp(1, BATCH),
        _ => BATCH,
    }
}

/// Renders the mail of a queued item with the credentials minted for it.
fn compose(
    state: &AppState,
    cfg: &crate::config::Config,
    item: &OutboxItem,
    minted: &Minted,
) -> Result<Outgoing, String> {
    let c = &minted.challenge;
    let link = minted
        .link
        .as_ref()
        .map(|t| cfg.public_link(&format!("/.auth/verify?token={t}")));
    let requested_at = crate::clock::format_unix(item.created_at);
    let mail = SignInMail {
        site: cfg
            .branding
            .name
            .as_deref()
            .or(cfg.public_url.host_str())
            .unwrap_or("Portcullis"),
        accent: cfg
            .branding
            .accent
            .as_ref()
            .map_or(crate::config::DEFAULT_ACCENT, |a| a.light.as_str()),
        logo: cfg
            .branding
            .logo
            .as_ref()
            .filter(|l| l.origin.is_some())
            .map(|l| l.src.as_str()),
        support: cfg.branding.support.as_ref().map(|s| s.label.as_str()),
        support_href: cfg.branding.support.as_ref().map(|s| s.href.as_str()),
        subject: &cfg.email.subject,
        email: &c.email,
        link: link.as_deref(),
        code: minted.code.as_deref(),
        ttl_minutes: c.expires_at.saturating_sub(state.clock.now()).div_ceil(60),
        requested_at: &requested_at,
        ip: &item.ip,
        user_agent: &item.user_agent,
    };
    let (text, html) = state.mail_templates.load().render(&mail)?;
    Ok(Outgoing {
        to: c.email.clone(),
        subject: cfg.email.subject.clone(),
        text,
        html,
        created_at: item.created_at,
    })
}

/// Puts a mail that could not be sent back in the queue, due again after the backoff.
async fn reschedule(state: &AppState, id: u64, mut item: OutboxItem, now: u64, error: &str) {
    item.attempts += 1;
    state.metrics.mail_retries();
    item.next_attempt_at = now + backoff(item.attempts);
    item.last_error = Some(error.to_string());
    tracing::warn!(to = %state.mask(&item.to), attempts = item.attempts, retry_in_s = backoff(item.attempts), error, "mail not sent; will retry");
    if let Err(e) = state.store.update_mail(id, &item).await {
        tracing::error!(error = %e, "outbox: cannot update the queue");
    }
}

/// One pass over the queue: takes up to [`BATCH`] due mails, drops those whose sign-in is over
/// (or that a newer mail of the same sign-in replaced), mints a link and code for each of the
/// others (only their hashes are stored, and flushed before any mail leaves), then sends them,
/// `email.smtp.max_connections` at a time; failures are rescheduled with backoff and mint
/// again on their next attempt. Returns how many it handled.
pub async fn deliver_due(state: &AppState) -> Result<usize, crate::store::StoreError> {
    let now = state.clock.now();
    let cfg = state.config();
    let mailer = state.mailer.load_full();
    let from = cfg.email.from.clone();
    // Claimed for a lease: another worker (another replica) takes them only if this one dies.
    let due = state.store.claim_mail(now, pass_size(state)).await?;
    let handled = due.len();
    let mut ready = Vec::with_capacity(due.len());
    for (id, item) in due {
        if item.expires_at <= now {
            // Debug, not warn: a flood of sign-ins that expire unsent would otherwise write one line each
            // (the mail_failed metric counts them).
            tracing::debug!(to = %state.mask(&item.to), attempts = item.attempts, "outbox: dropping mail for an expired sign-in");
            state.metrics.mail_failed();
            state.store.remove_mail(id).await?;
            continue;
        }
        match challenge::mint(state, &cfg, &item).await? {
            Mint::Drop(why) => {
                tracing::info!(to = %state.mask(&item.to), reason = why, "outbox: mail not sent");
                state.store.remove_mail(id).await?;
            }
            Mint::Send(minted) => match compose(state, &cfg, &item, &minted) {
                Ok(mail) => ready.push((id, item, mail)),
                Err(e) => reschedule(state, id, item, now, &format!("templates: {e}")).await,
            },
        }
    }
    if ready.is_empty() {
        return Ok(handled);
    }
    // The hashes of what is about to be mailed are durable before any mail leaves, so a mail
    // that was sent still works after a crash.
    state.store.flush().await?;
    futures_util::stream::iter(ready)
        .for_each_concurrent(mailer.parallelism(), |(id, item, mail)| {
            let (mailer, from) = (&mailer, &from);
            async move {
                let sent = match tokio::time::timeout(SEND_AT_MOST, mailer.send(from, &mail)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {}s", SEND_AT_MOST.as_secs())),
                };
                match sent {
                    Ok(()) => {
                        state.metrics.mail_sent();
                        tracing::info!(to = %state.mask(&item.to), attempts = item.attempts + 1, "mail sent");
                        if let Err(e) = state.store.remove_mail(id).await {
                            tracing::error!(error = %e, "outbox: cannot update the queue");
                        }
                    }
                    Err(e) => reschedule(state, id, item, now, &e).await,
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
