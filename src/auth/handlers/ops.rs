//! Health and keys: `/.auth/healthz`, `/.auth/readyz`, `/.auth/jwks.json`.

use std::sync::Arc;

use http::{header, HeaderValue, Response, StatusCode};

use crate::http::response::{json, text, Body};
use crate::state::AppState;

use super::ctx::{Ctx, Reply};

/// The mail transport's health, probed at most every [`MAIL_PROBE_EVERY`] per mailer (a reload
/// makes a new mailer, which is probed afresh); cached between probes.
async fn mail_health(state: &AppState) -> bool {
    type Probes = Vec<(usize, std::time::Instant, bool)>;
    static LAST: std::sync::Mutex<Probes> = std::sync::Mutex::new(Vec::new());
    let mailer = state.mailer.load_full();
    let key = Arc::as_ptr(&mailer) as usize;
    let cached = {
        let g = LAST.lock().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, at, ok)| (*at, *ok))
    };
    if let Some((at, ok)) = cached {
        if at.elapsed() < MAIL_PROBE_EVERY {
            return ok;
        }
    }
    let remember = |ok: bool| {
        let mut g = LAST.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|(k, _, _)| *k != key);
        if g.len() >= 16 {
            g.remove(0);
        }
        g.push((key, std::time::Instant::now(), ok));
    };
    // Claim the slot before dialling, so concurrent readyz calls do not all dial.
    remember(cached.is_none_or(|(_, ok)| ok));
    let ok = mailer.healthy().await;
    remember(ok);
    ok
}

const MAIL_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Liveness: the process answers. It does not claim the storage works (readyz does).
pub(super) fn healthz(state: &AppState) -> Response<Body> {
    if state.store.writable() {
        text(StatusCode::OK, "ok\n")
    } else {
        text(StatusCode::OK, "alive; storage cannot write (retrying)\n")
    }
}

impl Ctx<'_> {
    /// The public keys upstreams verify `headers.jwt` assertions with (RFC 7517).
    pub(super) fn jwks(&self) -> Response<Body> {
        let mut r = text(StatusCode::OK, self.state.jwt.load().jwks.clone());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        r
    }

    /// Readiness: `200` while the store accepts writes, else `503`. It shows no counts and
    /// nothing that changes with the outbox (a sign-in followed by a readyz must not tell whether
    /// that address may sign in); the mail transport's health is shown but does not fail
    /// readiness (mail waits in the outbox), and is probed at most every 10 seconds so the
    /// endpoint cannot be used to make the gateway dial SMTP. Counts are on the metrics listener.
    pub(super) async fn readyz(&self) -> Reply {
        let store_ok = self.state.store.check().await.is_ok();
        let mail_ok = mail_health(self.state).await;
        let status = if store_ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Ok(json(
            status,
            &serde_json::json!({"store": store_ok, "mail": mail_ok}),
        ))
    }
}
