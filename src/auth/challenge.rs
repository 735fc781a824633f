//! Sign-in challenges: issuing a link and a code by mail, resending, and redeeming either exactly once.
//!
//! No link or code is ever written to disk. A sign-in stores the challenge and queues a mail
//! that names it; the outbox worker mints the link and code when it sends that mail
//! ([`mint`]), writes only their hashes into the challenge, and forgets them once the mail is
//! out. A resend kills the current link and code at once and queues a new mail; a retried
//! send mints again, so only the newest mail of a challenge works.

use crate::auth::address::parse_address;
use crate::auth::policy::safe_redirect;
use crate::auth::regulation::{network_of, secs_ceil, Denied, Limits, Purpose};
use crate::config::Config;
use crate::crypto;
use crate::error::AuthError;
use crate::state::AppState;
use crate::store::{Challenge, Modify, OutboxItem, Rate, StoreError};

pub use crate::auth::regulation::Requester;

/// A challenge that was created or refreshed, and its browser-binding secret.
#[derive(Debug, Clone)]
pub struct Issued {
    pub challenge: Challenge,
    /// Random secret for the binding cookie (`{challenge_id}.{secret}`).
    pub binding: String,
}

/// What a mail needs about its requester, bounded like the challenge's copy.
fn user_agent(who: &Requester) -> String {
    who.user_agent.chars().take(256).collect()
}

/// Queues the mail of send number `c.sends` for addresses that may sign in. It names the
/// challenge and holds no secret; the worker mints the link and code when it sends it.
/// Disallowed addresses get the same work minus the queueing, so both take the same path.
async fn queue_mail(state: &AppState, c: &Challenge, who: &Requester) -> Result<(), AuthError> {
    let now = state.clock.now();
    if c.deliverable {
        state
            .store
            .enqueue_mail(&OutboxItem {
                challenge_id: c.id.clone(),
                send: c.sends,
                to: c.email.clone(),
                ip: who.ip.clone(),
                // Never the client's raw text (an attacker could write "restore access at
                // https://evil.example" into a genuine mail): a parsed device name only.
                user_agent: crate::auth::device::device(&who.user_agent),
                created_at: now,
                expires_at: c.expires_at,
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
            })
            .await?;
        state.metrics.mail_queued();
    } else {
        state.metrics.login_denied();
        tracing::info!(email = %state.mask(&c.email), ip = %who.ip, "sign-in requested for an address that may not sign in; no mail sent");
    }
    Ok(())
}

/// A link and code minted for one mail, with the challenge that now holds their hashes.
/// The values exist only here and in the mail.
pub struct Minted {
    pub challenge: Challenge,
    pub link: Option<String>,
    pub code: Option<String>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("challenge", &self.challenge.id)
            .finish_non_exhaustive()
    }
}

/// What to do with a queued mail.
#[derive(Debug)]
pub enum Mint {
    /// Send it: fresh credentials, their hashes already in the challenge (not yet flushed).
    Send(Box<Minted>),
    /// Drop it, for this reason (the challenge is gone, used, locked or expired, or a newer
    /// mail replaced this one).
    Drop(&'static str),
}

/// Mints the link and code of a queued mail at send time and writes their hashes into its
/// challenge, replacing the previous ones (a retried send makes the earlier mail useless).
/// The caller flushes the store before sending, so a mail that left is always redeemable.
pub async fn mint(state: &AppState, cfg: &Config, item: &OutboxItem) -> Result<Mint, StoreError> {
    let now = state.clock.now();
    let usable = |c: &Challenge| -> Result<(), &'static str> {
        if c.sends != item.send {
            return Err("a newer mail of the same sign-in replaced it");
        }
        if !c.deliverable {
            return Err("the address may not sign in");
        }
        check_live(cfg, c, now).map_err(|e| match e {
            AuthError::AlreadyUsed => "the sign-in is complete",
            AuthError::Locked => "the sign-in is locked",
            _ => "the sign-in expired",
        })
    };
    if item.challenge_id.is_empty() {
        return Ok(Mint::Drop(
            "it was queued by an older version (with its link in clear); the user can ask again",
        ));
    }
    let Some(current) = state.store.challenge(&item.challenge_id).await? else {
        return Ok(Mint::Drop("the sign-in no longer exists"));
    };
    if let Err(why) = usable(&current) {
        return Ok(Mint::Drop(why));
    }
    let link = cfg.login.link.then(crypto::random_token);
    let code = cfg
        .login
        .code
        .then(|| crypto::random_code(cfg.login.code_length));
    let link_hash = link.as_ref().map(|t| crypto::sha256(t.as_bytes()));
    let code_mac = code
        .as_ref()
        .map(|k| crypto::code_mac(&state.code_key, &current.id, k));
    // Index first: a resend that clears this hash after the swap below then finds the entry.
    state.store.relink(&current, None, link_hash).await?;
    let mut replaced = None;
    let outcome = state
        .store
        .modify_challenge(&current.id, |c| {
            let Some(mut c) = c else {
                return Modify::Keep(Err("the sign-in no longer exists"));
            };
            if let Err(why) = usable(&c) {
                return Modify::Keep(Err(why));
            }
            replaced = c.link_hash;
            c.link_hash = link_hash;
            c.code_mac = code_mac;
            Modify::Write(c.clone(), Ok(c))
        })
        .await?;
    match outcome {
        Ok(challenge) => {
            if replaced != link_hash {
                state.store.relink(&challenge, replaced, None).await?;
            }
            Ok(Mint::Send(Box::new(Minted {
                challenge,
                link,
                code,
            })))
        }
        Err(why) => {
            state.store.relink(&current, link_hash, None).await?;
            Ok(Mint::Drop(why))
        }
    }
}

/// Starts a sign-in for `email_input`. Same result shape for allowed and disallowed addresses.
pub async fn start(
    state: &AppState,
    cfg: &Config,
    email_input: &str,
    redirect_to: &str,
    client_state: Option<String>,
    who: &Requester,
) -> Result<Issued, AuthError> {
    let address = parse_address(email_input)?;
    let email = address.canonical().to_string();
    admit(state, cfg, who, &email, Purpose::NewChallenge).await?;
    if client_state.as_ref().is_some_and(|s| s.len() > 1024) {
        return Err(AuthError::BadRequest(
            "invalid_state",
            "state is longer than 1024 bytes".into(),
        ));
    }
    let now = state.clock.now();
    let binding = crypto::random_token();
    let c = Challenge {
        id: crypto::random_id(),
        deliverable: cfg.may_sign_in(&email),
        email,
        link_hash: None,
        code_mac: None,
        binding_hash: Some(crypto::sha256(binding.as_bytes())),
        created_at: now,
        expires_at: now + cfg.login.ttl.as_secs(),
        attempts: 0,
        completed: false,
        redirect_to: safe_redirect(cfg, redirect_to),
        state: client_state,
        sends: 1,
        last_sent_at: now,
        ip: who.ip.clone(),
        user_agent: user_agent(who),
    };
    state.store.insert_challenge(&c).await?;
    queue_mail(state, &c, who).await?;
    state.store.flush().await?;
    state.outbox_wake.notify_one();
    tracing::info!(challenge = %c.id, email = %state.mask(&c.email), ip = %who.ip, "sign-in requested");
    Ok(Issued {
        challenge: c,
        binding,
    })
}

/// Queues a mail with fresh credentials for a live or expired challenge (and gives it a new
/// lifetime); the old link and code stop working at once (the new ones are minted when the mail
/// is sent). Failed code attempts are kept: a resend does not refill them, nor unlocks a locked
/// challenge.
pub async fn resend(
    state: &AppState,
    cfg: &Config,
    challenge_id: &str,
    who: &Requester,
) -> Result<Challenge, AuthError> {
    let now = state.clock.now();
    let current = state
        .store
        .challenge(challenge_id)
        .await?
        .ok_or(AuthError::UnknownChallenge)?;
    check_resendable(cfg, &current, now)?;
    let since = now.saturating_sub(current.last_sent_at);
    let cooldown = cfg.login.resend_cooldown.as_secs();
    if since < cooldown {
        return Err(AuthError::ResendCooldown(cooldown - since));
    }
    admit(state, cfg, who, &current.email, Purpose::Resend).await?;
    let mut cleared = None;
    let updated = state
        .store
        .modify_challenge(challenge_id, |c| {
            let Some(mut c) = c else {
                return Modify::Keep(Err(AuthError::UnknownChallenge));
            };
            if let Err(e) = check_resendable(cfg, &c, now) {
                return Modify::Keep(Err(e));
            }
            if c.last_sent_at != current.last_sent_at {
                // Someone else resent concurrently; theirs stands.
                return Modify::Keep(Err(AuthError::ResendCooldown(cooldown.max(1))));
            }
            cleared = c.link_hash;
            c.link_hash = None;
            c.code_mac = None;
            c.sends += 1;
            c.last_sent_at = now;
            c.expires_at = now + cfg.login.ttl.as_secs();
            Modify::Write(c.clone(), Ok(c))
        })
        .await??;
    state.store.relink(&updated, cleared, None).await?;
    queue_mail(state, &updated, who).await?;
    state.store.flush().await?;
    state.outbox_wake.notify_one();
    Ok(updated)
}

/// Where a challenge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// A link or code may still sign in.
    Live,
    /// Signed in with already.
    Used,
    /// `max_code_attempts` wrong codes.
    Locked,
    /// Past its `expires_at` (a resend revives it).
    Expired,
}

impl Liveness {
    /// The error a redemption of a challenge in this state gets (`None` while live).
    pub fn error(self) -> Option<AuthError> {
        match self {
            Liveness::Live => None,
            Liveness::Used => Some(AuthError::AlreadyUsed),
            Liveness::Locked => Some(AuthError::Locked),
            Liveness::Expired => Some(AuthError::Expired),
        }
    }
}

/// Where `c` stands at `now` (used before locked before expired).
pub fn liveness(cfg: &Config, c: &Challenge, now: u64) -> Liveness {
    if c.completed {
        Liveness::Used
    } else if c.attempts >= cfg.login.max_code_attempts {
        Liveness::Locked
    } else if c.expires_at <= now {
        Liveness::Expired
    } else {
        Liveness::Live
    }
}

/// Refuses completed, expired and locked challenges.
fn check_live(cfg: &Config, c: &Challenge, now: u64) -> Result<(), AuthError> {
    match liveness(cfg, c, now).error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Refuses completed and locked challenges; an expired one may be sent again (the resend gives
/// it a new lifetime), so its owner need not type the address again.
fn check_resendable(cfg: &Config, c: &Challenge, now: u64) -> Result<(), AuthError> {
    match liveness(cfg, c, now) {
        Liveness::Live | Liveness::Expired => Ok(()),
        other => Err(other.error().unwrap_or(AuthError::Expired)),
    }
}

/// The live challenge a link token belongs to, without spending it (for the confirm page).
pub async fn peek_link(
    state: &AppState,
    cfg: &Config,
    token: &str,
) -> Result<Challenge, AuthError> {
    if !crypto::looks_like_token(token) {
        return Err(AuthError::InvalidLink);
    }
    let hash = crypto::sha256(token.as_bytes());
    let id = state
        .store
        .challenge_for_link(&hash)
        .await?
        .ok_or(AuthError::InvalidLink)?;
    let c = state
        .store
        .challenge(&id)
        .await?
        .ok_or(AuthError::InvalidLink)?;
    if !c.link_hash.is_some_and(|h| crypto::ct_eq(&h, &hash)) || !c.deliverable {
        return Err(AuthError::InvalidLink);
    }
    check_live(cfg, &c, state.clock.now())?;
    Ok(c)
}

/// Spends a link token. Of concurrent redemptions exactly one succeeds (compare-and-swap).
pub async fn redeem_link(
    state: &AppState,
    cfg: &Config,
    token: &str,
) -> Result<Challenge, AuthError> {
    let c = peek_link(state, cfg, token).await?;
    let hash = crypto::sha256(token.as_bytes());
    let now = state.clock.now();
    state
        .store
        .modify_challenge(&c.id, |c| {
            let Some(mut c) = c else {
                return Modify::Keep(Err(AuthError::InvalidLink));
            };
            if !c.link_hash.is_some_and(|h| crypto::ct_eq(&h, &hash)) {
                return Modify::Keep(Err(AuthError::InvalidLink));
            }
            if let Err(e) = check_live(cfg, &c, now) {
                return Modify::Keep(Err(e));
            }
            c.completed = true;
            Modify::Write(c.clone(), Ok(c))
        })
        .await?
}

/// The digits of a typed code: spaces (any whitespace) and dashes removed, then exactly `len`
/// ASCII digits, else `None`.
pub fn well_formed(typed: &str, len: u32) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    (code.len() == len as usize && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// Checks a code against its challenge; counts failures and locks the challenge at the cap. A
/// malformed code ([`well_formed`]) is refused without counting.
pub async fn redeem_code(
    state: &AppState,
    cfg: &Config,
    challenge_id: &str,
    code: &str,
    ip: &str,
) -> Result<Challenge, AuthError> {
    if !cfg.login.code {
        return Err(AuthError::BadRequest(
            "codes_disabled",
            "sign-in by code is not enabled".into(),
        ));
    }
    let code = match well_formed(code, cfg.login.code_length) {
        Some(code) => code,
        // Not a code at all (a letter, a wrong length): refused before the store is asked, so
        // it costs no attempt and says nothing about the challenge.
        None => return Err(AuthError::MalformedCode(cfg.login.code_length)),
    };
    let now = state.clock.now();
    let max = cfg.login.max_code_attempts;
    let mut failed: Option<(String, u32)> = None;
    let result = state
        .store
        .modify_challenge(challenge_id, |c| {
            failed = None;
            let Some(mut c) = c else {
                return Modify::Keep(Err(AuthError::UnknownChallenge));
            };
            if let Err(e) = check_live(cfg, &c, now) {
                return Modify::Keep(Err(e));
            }
            let mac = crypto::code_mac(&state.code_key, &c.id, &code);
            let good = c.deliverable && c.code_mac.is_some_and(|m| crypto::ct_eq(&m, &mac));
            if good {
                c.completed = true;
                Modify::Write(c.clone(), Ok(c))
            } else {
                c.attempts += 1;
                let left = max.saturating_sub(c.attempts);
                failed = Some((c.email.clone(), left));
                let err = if left == 0 {
                    AuthError::Locked
                } else {
                    AuthError::WrongCode(left)
                };
                Modify::Write(c, Err(err))
            }
        })
        .await?;
    if let Some((email, left)) = failed {
        state.metrics.codes_failed();
        let detail = format!(
            "challenge {challenge_id}, {} left",
            crate::error::attempts(left)
        );
        state
            .audit(
                if left == 0 { "lockout" } else { "code_failed" },
                &email,
                ip,
                &detail,
            )
            .await;
    }
    result
}

/// The keyed name of a shared rate-limit bucket: an HMAC under the server's key, so the store
/// holds neither the address nor the client network in clear.
fn bucket_key(state: &AppState, tag: u8, parts: &[&[u8]]) -> [u8; 32] {
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(b"portcullis/bucket/v1\0");
    msg.push(tag);
    for p in parts {
        msg.extend_from_slice(&(p.len() as u64).to_be_bytes());
        msg.extend_from_slice(p);
    }
    crypto::hmac(&state.secret, &msg)
}

fn rate(b: crate::auth::regulation::Bucket) -> Rate {
    Rate {
        interval_us: b.interval_us(),
        tolerance_us: b.tolerance(),
    }
}

/// Applies the pending cap and the rate limits to a sign-in request for the canonical `email`,
/// before any work is done for it. The buckets live in the store when it is shared (every
/// replica spends the same budget), else in this process ([`crate::auth::regulation`]).
pub async fn admit(
    state: &AppState,
    cfg: &Config,
    who: &Requester,
    email: &str,
    purpose: Purpose,
) -> Result<(), AuthError> {
    let now = state.clock.now();
    let browser = who.known.vouches_for(&state.secret, email);
    let network = network_of(&who.ip, cfg.login.ipv6_prefix);
    let limits = Limits::of(cfg);
    let limiter = &state.limiter;
    let (keys, rates): (Vec<[u8; 32]>, Vec<Rate>) = match browser {
        // A known browser spends only its own budget: nobody else can empty it.
        Some(id) => (
            vec![bucket_key(state, b'b', &[id.as_bytes(), email.as_bytes()])],
            vec![rate(limits.address)],
        ),
        None => (
            vec![
                bucket_key(state, b'e', &[email.as_bytes()]),
                bucket_key(state, b'n', &[network.as_bytes()]),
            ],
            vec![rate(limits.address), rate(limits.network)],
        ),
    };
    let new = purpose == Purpose::NewChallenge;
    let outcome = if state.store.shares_limits() {
        match new.then(|| limiter.reserve(limits.max_pending, browser.is_some())) {
            Some(Err(d)) => Err(d),
            _ => {
                let taken = state
                    .store
                    .take(&keys, &rates, now.saturating_mul(1_000_000))
                    .await;
                let r = match taken {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(wait_us)) => Err(Denied::Limited(secs_ceil(wait_us))),
                    Err(e) => {
                        if new {
                            limiter.release();
                        }
                        return Err(e.into());
                    }
                };
                if r.is_err() && new {
                    limiter.release();
                }
                r
            }
        }
    } else {
        limiter.check(&limits, &network, email, browser, purpose, now)
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(d) => {
            state.metrics.rate_limited();
            match d {
                Denied::Limited(s) => {
                    tracing::debug!(network = %network, email = %state.mask(email), known = browser.is_some(), "sign-in rate-limited");
                    Err(AuthError::RateLimited(s))
                }
                Denied::Busy(s) => {
                    if limiter.warn_due(now) {
                        tracing::warn!(
                            pending = limiter.pending(),
                            max_pending = cfg.login.max_pending,
                            "sign-ins refused: too many pending challenges or tracked addresses (login.max_pending); further refusals are not logged for a minute"
                        );
                    }
                    Err(AuthError::Busy(s))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::well_formed;

    #[test]
    fn a_code_is_exactly_its_digits_with_spaces_and_dashes_removed() {
        assert_eq!(well_formed("012345", 6).as_deref(), Some("012345"));
        assert_eq!(well_formed(" 012-345 ", 6).as_deref(), Some("012345"));
        assert_eq!(well_formed("01 23 45", 6).as_deref(), Some("012345"));
        assert_eq!(well_formed("0123456789", 10).as_deref(), Some("0123456789"));
        for bad in [
            "",
            "01234",
            "0123456",
            "01234a",
            "٠١٢٣٤٥",
            "012.345",
            "+12345",
        ] {
            assert_eq!(well_formed(bad, 6), None, "{bad:?}");
        }
    }
}
