//! Sign-in challenges: issuing a link and a code by mail, resending, and redeeming either exactly once.

use crate::auth::address::parse_address;
use crate::auth::policy::safe_redirect;
use crate::config::Config;
use crate::crypto;
use crate::error::AuthError;
use crate::mail::templates::SignInMail;
use crate::state::AppState;
use crate::store::{Challenge, Modify, OutboxItem};

/// Who asked, for the mail ("requested from … with …") and the session record.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    pub ip: String,
    pub user_agent: String,
}

/// A challenge that was created or refreshed, and its browser-binding secret.
#[derive(Debug, Clone)]
pub struct Issued {
    pub challenge: Challenge,
    /// Random secret for the binding cookie (`{challenge_id}.{secret}`).
    pub binding: String,
}

const ONE_MINUTE: u64 = 60;
const ONE_HOUR: u64 = 3600;

/// Applies the per-IP and per-address limits (keys are the IP and the canonical address).
fn regulate(state: &AppState, cfg: &Config, ip: &str, email: &str) -> Result<(), AuthError> {
    let now = state.clock.now();
    let limited = |r: Result<(), u64>| {
        r.map_err(|s| {
            state.metrics.rate_limited();
            AuthError::RateLimited(s)
        })
    };
    limited(state.limiter.would_allow(
        &format!("email:{email}"),
        cfg.login.per_email_per_hour,
        ONE_HOUR,
        now,
    ))?;
    limited(state.limiter.hit(
        &format!("ip:{ip}"),
        cfg.login.per_ip_per_minute,
        ONE_MINUTE,
        now,
    ))?;
    limited(state.limiter.hit(
        &format!("email:{email}"),
        cfg.login.per_email_per_hour,
        ONE_HOUR,
        now,
    ))
}

/// Fresh credentials for a challenge: (link token, code), and their hashes written into `c`.
fn arm(state: &AppState, cfg: &Config, c: &mut Challenge) -> (Option<String>, Option<String>) {
    let link = cfg.login.link.then(crypto::random_token);
    let code = cfg
        .login
        .code
        .then(|| crypto::random_code(cfg.login.code_length));
    c.link_hash = link.as_ref().map(|t| crypto::sha256(t.as_bytes()));
    c.code_mac = code
        .as_ref()
        .map(|k| crypto::code_mac(&state.secret, &c.id, k));
    (link, code)
}

/// Renders the mail and, for addresses that may sign in, queues it. Disallowed addresses
/// get the same work minus the queueing, so both take the same path and time.
fn queue_mail(
    state: &AppState,
    cfg: &Config,
    c: &Challenge,
    link: Option<&str>,
    code: Option<&str>,
    who: &Requester,
) -> Result<(), AuthError> {
    let now = state.clock.now();
    let link_url = link.map(|t| cfg.public_link(&format!("/.auth/verify?token={t}")));
    let requested_at = crate::clock::format_unix(now);
    let mail = SignInMail {
        site: cfg.public_url.host_str().unwrap_or("Portcullis"),
        subject: &cfg.email.subject,
        email: &c.email,
        link: link_url.as_deref(),
        code,
        ttl_minutes: c.expires_at.saturating_sub(now).div_ceil(60),
        requested_at: &requested_at,
        ip: &who.ip,
        user_agent: &who.user_agent,
    };
    let (text, html) = state
        .mail_templates
        .load()
        .render(&mail)
        .map_err(AuthError::Internal)?;
    if c.deliverable {
        state.store.enqueue_mail(&OutboxItem {
            to: c.email.clone(),
            subject: cfg.email.subject.clone(),
            text,
            html,
            created_at: now,
            expires_at: c.expires_at,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
        })?;
        state.metrics.mail_queued();
    } else {
        state.metrics.login_denied();
        tracing::info!(email = %state.mask(&c.email), ip = %who.ip, "sign-in requested for an address that may not sign in; no mail sent");
    }
    Ok(())
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
    regulate(state, cfg, &who.ip, &email)?;
    if client_state.as_ref().is_some_and(|s| s.len() > 1024) {
        return Err(AuthError::BadRequest(
            "invalid_state",
            "state is longer than 1024 bytes".into(),
        ));
    }
    let now = state.clock.now();
    let binding = crypto::random_token();
    let mut c = Challenge {
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
        user_agent: who.user_agent.chars().take(256).collect(),
    };
    let (link, code) = arm(state, cfg, &mut c);
    state.store.insert_challenge(&c)?;
    queue_mail(state, cfg, &c, link.as_deref(), code.as_deref(), who)?;
    state.store.flush().await?;
    state.outbox_wake.notify_one();
    tracing::info!(challenge = %c.id, email = %state.mask(&c.email), ip = %who.ip, "sign-in requested");
    Ok(Issued {
        challenge: c,
        binding,
    })
}

/// Sends fresh credentials for a live challenge; the old link and code stop working.
/// Failed code attempts are kept: a resend does not refill them.
pub async fn resend(
    state: &AppState,
    cfg: &Config,
    challenge_id: &str,
    who: &Requester,
) -> Result<Challenge, AuthError> {
    let now = state.clock.now();
    let current = state
        .store
        .challenge(challenge_id)?
        .ok_or(AuthError::UnknownChallenge)?;
    check_live(cfg, &current, now)?;
    let since = now.saturating_sub(current.last_sent_at);
    let cooldown = cfg.login.resend_cooldown.as_secs();
    if since < cooldown {
        return Err(AuthError::ResendCooldown(cooldown - since));
    }
    regulate(state, cfg, &who.ip, &current.email)?;
    let mut creds = (None, None);
    let updated = state.store.modify_challenge(challenge_id, |c| {
        let Some(mut c) = c else {
            return Modify::Keep(Err(AuthError::UnknownChallenge));
        };
        if let Err(e) = check_live(cfg, &c, now) {
            return Modify::Keep(Err(e));
        }
        if c.last_sent_at != current.last_sent_at {
            // Someone else resent concurrently; theirs stands.
            return Modify::Keep(Err(AuthError::ResendCooldown(cooldown.max(1))));
        }
        creds = arm(state, cfg, &mut c);
        c.sends += 1;
        c.last_sent_at = now;
        c.expires_at = now + cfg.login.ttl.as_secs();
        Modify::Write(c.clone(), Ok(c))
    })??;
    state
        .store
        .relink(&updated.id, current.link_hash, updated.link_hash)?;
    queue_mail(
        state,
        cfg,
        &updated,
        creds.0.as_deref(),
        creds.1.as_deref(),
        who,
    )?;
    state.store.flush().await?;
    state.outbox_wake.notify_one();
    Ok(updated)
}

/// Refuses completed, expired and locked challenges.
fn check_live(cfg: &Config, c: &Challenge, now: u64) -> Result<(), AuthError> {
    if c.completed {
        return Err(AuthError::AlreadyUsed);
    }
    if c.attempts >= cfg.login.max_code_attempts {
        return Err(AuthError::Locked);
    }
    if c.expires_at <= now {
        return Err(AuthError::Expired);
    }
    Ok(())
}

/// The live challenge a link token belongs to, without spending it (for the confirm page).
pub fn peek_link(state: &AppState, cfg: &Config, token: &str) -> Result<Challenge, AuthError> {
    if !crypto::looks_like_token(token) {
        return Err(AuthError::InvalidLink);
    }
    let hash = crypto::sha256(token.as_bytes());
    let id = state
        .store
        .challenge_for_link(&hash)?
        .ok_or(AuthError::InvalidLink)?;
    let c = state.store.challenge(&id)?.ok_or(AuthError::InvalidLink)?;
    if !c.link_hash.is_some_and(|h| crypto::ct_eq(&h, &hash)) || !c.deliverable {
        return Err(AuthError::InvalidLink);
    }
    check_live(cfg, &c, state.clock.now())?;
    Ok(c)
}

/// Spends a link token. Of concurrent redemptions exactly one succeeds (compare-and-swap).
pub fn redeem_link(state: &AppState, cfg: &Config, token: &str) -> Result<Challenge, AuthError> {
    let c = peek_link(state, cfg, token)?;
    let hash = crypto::sha256(token.as_bytes());
    let now = state.clock.now();
    state.store.modify_challenge(&c.id, |c| {
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
    })?
}

/// Checks a code against its challenge; counts failures and locks the challenge at the cap.
pub fn redeem_code(
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
    let code: String = code.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let now = state.clock.now();
    let max = cfg.login.max_code_attempts;
    let mut failed: Option<(String, u32)> = None;
    let result = state.store.modify_challenge(challenge_id, |c| {
        failed = None;
        let Some(mut c) = c else {
            return Modify::Keep(Err(AuthError::UnknownChallenge));
        };
        if let Err(e) = check_live(cfg, &c, now) {
            return Modify::Keep(Err(e));
        }
        let mac = crypto::code_mac(&state.secret, &c.id, &code);
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
    })?;
    if let Some((email, left)) = failed {
        state.metrics.codes_failed();
        let detail = format!("challenge {challenge_id}, {left} attempts left");
        state.audit(
            if left == 0 { "lockout" } else { "code_failed" },
            &email,
            ip,
            &detail,
        );
    }
    result
}
