//! Errors of the auth endpoints and the ONE place that maps them to statuses, JSON bodies and HTML pages.

use http::{header, HeaderValue, Response, StatusCode};

use crate::auth::address::AddressError;
use crate::http::response::{html, json, Body};
use crate::state::AppState;
use crate::store::StoreError;

/// Everything a `/.auth/` request can fail with. Messages are written for users.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidEmail(#[from] AddressError),
    #[error("too many requests; try again in {0} seconds")]
    RateLimited(u64),
    /// The pending-challenge cap (`login.max_pending`) is reached, or the limiter cannot track
    /// another address: 503, nothing was done.
    #[error("too many sign-ins are in progress; try again in {0} seconds")]
    Busy(u64),
    #[error("wait {0} seconds before asking for another mail")]
    ResendCooldown(u64),
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("this sign-in request does not exist; request a new mail")]
    UnknownChallenge,
    #[error("this sign-in request has expired; request a new mail")]
    Expired,
    #[error("this sign-in link or code was already used; request a new mail if you need to sign in again")]
    AlreadyUsed,
    #[error("too many wrong codes; this sign-in request is locked, request a new one")]
    Locked,
    #[error("that code is not right; {0} attempts left")]
    WrongCode(u32),
    #[error("this sign-in link is not valid; it may be incomplete or replaced by a newer mail")]
    InvalidLink,
    #[error("you are not signed in")]
    Unauthenticated,
    #[error("the address {0} may not access this site")]
    NotAllowed(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("this request came from another site and was refused")]
    CrossOrigin,
    #[error("send the request body as application/json")]
    UnsupportedMediaType,
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("no such page")]
    NotFound,
    /// A storage failure: 503 with `Retry-After` while the storage cannot write (it is retried
    /// until it can), 500 for anything else.
    #[error("{}", store_message(.0))]
    Store(#[from] StoreError),
    #[error("internal error")]
    Internal(String),
}

/// Seconds a client is told to wait while the storage cannot write.
pub const STORE_RETRY_AFTER: u64 = 10;

/// What a user is told about a storage failure.
fn store_message(e: &StoreError) -> &'static str {
    if e.is_unavailable() {
        "the gateway cannot save anything right now (its storage is full or failing); nothing was changed, try again in a minute"
    } else {
        "internal error"
    }
}

/// "this link expired" -> "This link expired." for pages (JSON keeps the plain text).
fn sentence(s: &str) -> String {
    let mut c = s.chars();
    let mut out: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        use AuthError::*;
        match self {
            InvalidEmail(_) | BadRequest(..) | WrongCode(_) | InvalidLink => {
                StatusCode::BAD_REQUEST
            }
            RateLimited(_) | ResendCooldown(_) => StatusCode::TOO_MANY_REQUESTS,
            Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            UnknownChallenge | NotFound => StatusCode::NOT_FOUND,
            Expired | AlreadyUsed | Locked => StatusCode::GONE,
            Unauthenticated => StatusCode::UNAUTHORIZED,
            NotAllowed(_) | Forbidden(_) | CrossOrigin => StatusCode::FORBIDDEN,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Store(_) | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of the JSON API.
    pub fn code(&self) -> &'static str {
        use AuthError::*;
        match self {
            InvalidEmail(_) => "invalid_email",
            RateLimited(_) => "rate_limited",
            Busy(_) => "busy",
            ResendCooldown(_) => "resend_cooldown",
            BadRequest(code, _) => code,
            UnknownChallenge => "unknown_challenge",
            Expired => "expired",
            AlreadyUsed => "already_used",
            Locked => "locked",
            WrongCode(_) => "wrong_code",
            InvalidLink => "invalid_link",
            Unauthenticated => "unauthenticated",
            NotAllowed(_) => "not_allowed",
            Forbidden(_) => "forbidden",
            CrossOrigin => "cross_origin",
            UnsupportedMediaType => "unsupported_media_type",
            PayloadTooLarge => "payload_too_large",
            BodyTimeout => "body_timeout",
            MethodNotAllowed => "method_not_allowed",
            NotFound => "not_found",
            Store(e) if e.is_unavailable() => "storage_unavailable",
            Store(_) | Internal(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            AuthError::RateLimited(s) | AuthError::ResendCooldown(s) | AuthError::Busy(s) => {
                Some(*s)
            }
            AuthError::Store(e) if e.is_unavailable() => Some(STORE_RETRY_AFTER),
            _ => None,
        }
    }

    fn log(&self) {
        if let AuthError::Store(e) = self {
            tracing::error!(error = %e, "store error");
        } else if let AuthError::Internal(e) = self {
            tracing::error!(error = %e, "internal error");
        }
    }

    /// `{"error": "...", "code": "..."}` with the right status (and `Retry-After`).
    pub fn to_json(&self) -> Response<Body> {
        self.log();
        let body = serde_json::json!({ "error": self.to_string(), "code": self.code() });
        self.finish(json(self.status(), &body))
    }

    /// A product-looking error page with a way forward.
    pub fn to_page(&self, state: &AppState) -> Response<Body> {
        self.log();
        let title = match self.status() {
            StatusCode::TOO_MANY_REQUESTS => "Slow down",
            StatusCode::SERVICE_UNAVAILABLE => "Try again soon",
            StatusCode::FORBIDDEN if matches!(self, AuthError::CrossOrigin) => "Request refused",
            StatusCode::FORBIDDEN => "Access denied",
            StatusCode::GONE => "Sign-in link expired",
            StatusCode::INTERNAL_SERVER_ERROR => "Something went wrong",
            _ => "Cannot sign in",
        };
        let page = state.pages.message(
            title,
            &sentence(&self.to_string()),
            Some(("/.auth/login", "Back to sign-in")),
        );
        self.finish(html(self.status(), page))
    }

    fn finish(&self, mut resp: Response<Body>) -> Response<Body> {
        if let Some(s) = self.retry_after() {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
