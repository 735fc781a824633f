//! Errors of the auth endpoints and the ONE place that maps them to statuses, JSON bodies and HTML pages.

use http::{header, HeaderValue, Response, StatusCode};

use crate::auth::address::AddressError;
use crate::http::pages::{Action, Message};
use crate::http::response::{html, json, Body};
use crate::state::AppState;
use crate::store::StoreError;

/// Everything a `/.auth/` request can fail with. Messages are written for users, as sentences.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{}", sentence(&.0.to_string()))]
    InvalidEmail(#[from] AddressError),
    #[error("Too many requests. Try again in {}.", seconds(*.0))]
    RateLimited(u64),
    /// The pending-challenge cap (`login.max_pending`) is reached, or the limiter cannot track
    /// another address: 503, nothing was done.
    #[error("Too many sign-ins are in progress. Try again in {}.", seconds(*.0))]
    Busy(u64),
    #[error("Wait {} before asking for another mail.", seconds(*.0))]
    ResendCooldown(u64),
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// This browser has no sign-in in progress (no binding cookie, or one for another browser).
    #[error("This browser has no sign-in in progress (or it blocks cookies). Start again.")]
    NoSignIn,
    #[error("This sign-in request does not exist. Start again to get a new mail.")]
    UnknownChallenge,
    #[error("This sign-in request has expired. Ask for a new mail.")]
    Expired,
    #[error("This sign-in link or code was already used. If you need to sign in again, ask for a new mail.")]
    AlreadyUsed,
    #[error(
        "Too many wrong codes: this sign-in request is locked. Start again to get a new mail."
    )]
    Locked,
    #[error("That code is not right. {} left.", attempts(*.0))]
    WrongCode(u32),
    /// Not a code at all (letters, or a wrong number of digits): refused without counting as an
    /// attempt. Carries the configured code length.
    #[error("A code has {0} digits. Type the {0} digits from the mail (spaces and dashes are fine); this did not count as an attempt.")]
    MalformedCode(u32),
    #[error("This sign-in link is not valid. It may be incomplete, or a newer mail replaced it.")]
    InvalidLink,
    #[error("You are not signed in.")]
    Unauthenticated,
    #[error("The address {0} may not access this site.")]
    NotAllowed(String),
    /// A signed-in user who is not in `admins` opened an admin page.
    #[error("The address {0} is not an administrator of this gateway.")]
    NotAdmin(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("This request came from another site and was refused.")]
    CrossOrigin,
    #[error("Send the request body as application/json.")]
    UnsupportedMediaType,
    #[error("The request body is too large.")]
    PayloadTooLarge,
    #[error("The request body did not arrive in time.")]
    BodyTimeout,
    #[error("This address does not accept that kind of request (HTTP method).")]
    MethodNotAllowed,
    #[error("There is no page at this address.")]
    NotFound,
    /// A storage failure: 503 with `Retry-After` while the storage cannot write (it is retried
    /// until it can), 500 for anything else.
    #[error("{}", store_message(.0))]
    Store(#[from] StoreError),
    #[error("Internal error.")]
    Internal(String),
}

/// "1 second", "36 seconds".
fn seconds(n: u64) -> String {
    if n == 1 {
        "1 second".into()
    } else {
        format!("{n} seconds")
    }
}

/// "1 attempt", "4 attempts".
pub fn attempts(n: u32) -> String {
    if n == 1 {
        "1 attempt".into()
    } else {
        format!("{n} attempts")
    }
}

/// What an error page knows about the sign-in it is about, for its way on.
#[derive(Debug, Default, Clone)]
pub struct WayOn {
    /// The address of the sign-in (prefilled by "Start again").
    pub email: Option<String>,
    /// Where the sign-in was going.
    pub rd: Option<String>,
    /// Whether this browser may ask for a new mail of the same sign-in (`POST /.auth/resend`).
    pub resend: bool,
}

impl WayOn {
    /// The login form with the address and destination filled in.
    pub fn start_again_href(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(rd) = self.rd.as_deref().filter(|r| !r.is_empty()) {
            q.append_pair("rd", rd);
        }
        if let Some(e) = self.email.as_deref().filter(|e| !e.is_empty()) {
            q.append_pair("email", e);
        }
        let q = q.finish();
        if q.is_empty() {
            "/.auth/login".into()
        } else {
            format!("/.auth/login?{q}")
        }
    }
}

/// Seconds a client is told to wait while the storage cannot write.
pub const STORE_RETRY_AFTER: u64 = 10;

/// What a user is told about a storage failure.
fn store_message(e: &StoreError) -> &'static str {
    if e.is_unavailable() {
        "The gateway cannot save anything right now (its storage is full or failing). Nothing was changed; try again in a minute."
    } else {
        "Internal error."
    }
}

/// "the domain is not valid" -> "The domain is not valid." (address errors are written to be
/// quoted after a colon, in config problems too).
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
            InvalidEmail(_) | BadRequest(..) | WrongCode(_) | MalformedCode(_) | InvalidLink
            | NoSignIn => StatusCode::BAD_REQUEST,
            RateLimited(_) | ResendCooldown(_) => StatusCode::TOO_MANY_REQUESTS,
            Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            UnknownChallenge | NotFound => StatusCode::NOT_FOUND,
            Expired | AlreadyUsed | Locked => StatusCode::GONE,
            Unauthenticated => StatusCode::UNAUTHORIZED,
            NotAllowed(_) | NotAdmin(_) | Forbidden(_) | CrossOrigin => StatusCode::FORBIDDEN,
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
            MalformedCode(_) => "malformed_code",
            NoSignIn => "no_challenge",
            NotAdmin(_) => "not_admin",
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
        self.page_with(state, &WayOn::default())
    }

    /// The error page, with what the caller knows about the sign-in (the address, where it was
    /// going, whether a resend is allowed) for its one-click way on.
    pub fn page_with(&self, state: &AppState, way: &WayOn) -> Response<Body> {
        use AuthError::*;
        self.log();
        let start_again = || Action::link(way.start_again_href(), "Start again");
        let back = || Action::link("/.auth/login".into(), "Back to sign-in");
        let home = || Action::link("/".into(), "Go to the start page");
        let (title, action) = match self {
            Locked => ("Too many wrong codes", start_again()),
            AlreadyUsed => ("This link was already used", start_again()),
            Expired if way.resend => (
                "This sign-in expired",
                Action::post("/.auth/resend", "Send a new mail"),
            ),
            Expired => ("This sign-in expired", start_again()),
            InvalidLink => ("This link does not work", start_again()),
            UnknownChallenge | NoSignIn => ("No sign-in in progress", start_again()),
            NotFound => ("Page not found", home()),
            MethodNotAllowed => ("Method not allowed", home()),
            NotAdmin(_) => (
                "Administrators only",
                Action::link("/.auth/sessions".into(), "Your sessions"),
            ),
            NotAllowed(_) => (
                "Access denied",
                Action::link("/.auth/login".into(), "Sign in with another address"),
            ),
            Forbidden(_) => ("Access denied", back()),
            CrossOrigin | UnsupportedMediaType | PayloadTooLarge | BodyTimeout => {
                ("Request refused", back())
            }
            RateLimited(_) => ("Slow down", back()),
            Busy(_) => ("Try again soon", back()),
            Store(e) if e.is_unavailable() => ("Try again soon", back()),
            Store(_) | Internal(_) => ("Something went wrong", back()),
            InvalidEmail(_) | BadRequest(..) | ResendCooldown(_) | WrongCode(_)
            | MalformedCode(_) | Unauthenticated => ("Cannot sign in", back()),
        };
        // The pages of a sign-in that ended say what happened in other words than their heading.
        let message = match self {
            Locked => "After too many wrong codes this sign-in is locked, so nobody can keep guessing. Start again to get a new mail.".to_string(),
            AlreadyUsed => "Each sign-in link and code works once, and this one has been used, perhaps on another device. Start again to sign in here.".to_string(),
            Expired if way.resend => "Sign-in links and codes work for a short time only. Send a new mail for a fresh link and code; the address stays the same.".to_string(),
            Expired => "Sign-in links and codes work for a short time only. Start again to get a new mail.".to_string(),
            _ => sentence(&self.to_string()),
        };
        let page = state.pages.message_with(&Message {
            title,
            message: &message,
            action: Some(action),
            ..Message::default()
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_sentences_with_singular_and_plural() {
        assert_eq!(
            AuthError::WrongCode(1).to_string(),
            "That code is not right. 1 attempt left."
        );
        assert_eq!(
            AuthError::WrongCode(4).to_string(),
            "That code is not right. 4 attempts left."
        );
        assert_eq!(
            AuthError::RateLimited(1).to_string(),
            "Too many requests. Try again in 1 second."
        );
        assert_eq!(
            AuthError::InvalidEmail(AddressError::Domain).to_string(),
            "The domain is not valid."
        );
        for e in [
            AuthError::RateLimited(36),
            AuthError::Busy(60),
            AuthError::ResendCooldown(30),
            AuthError::NoSignIn,
            AuthError::UnknownChallenge,
            AuthError::Expired,
            AuthError::AlreadyUsed,
            AuthError::Locked,
            AuthError::MalformedCode(6),
            AuthError::InvalidLink,
            AuthError::Unauthenticated,
            AuthError::NotAllowed("a@example.com".into()),
            AuthError::NotAdmin("a@example.com".into()),
            AuthError::CrossOrigin,
            AuthError::UnsupportedMediaType,
            AuthError::PayloadTooLarge,
            AuthError::BodyTimeout,
            AuthError::MethodNotAllowed,
            AuthError::NotFound,
            AuthError::Internal("x".into()),
        ] {
            let m = e.to_string();
            assert!(
                m.starts_with(|c: char| c.is_uppercase()) && m.ends_with('.'),
                "{e:?}: {m}"
            );
        }
    }

    #[test]
    fn statuses_and_codes_are_pinned() {
        for (e, status, code) in [
            (AuthError::MalformedCode(6), 400, "malformed_code"),
            (AuthError::NoSignIn, 400, "no_challenge"),
            (AuthError::WrongCode(2), 400, "wrong_code"),
            (AuthError::Locked, 410, "locked"),
            (AuthError::AlreadyUsed, 410, "already_used"),
            (AuthError::NotAdmin("a@b.c".into()), 403, "not_admin"),
            (AuthError::MethodNotAllowed, 405, "method_not_allowed"),
            (AuthError::NotFound, 404, "not_found"),
        ] {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.code(), code, "{e:?}");
        }
    }

    #[test]
    fn start_again_keeps_the_address_and_the_target() {
        assert_eq!(WayOn::default().start_again_href(), "/.auth/login");
        let w = WayOn {
            email: Some("a+b@example.com".into()),
            rd: Some("https://app.example.com/x?y=1&z".into()),
            resend: false,
        };
        assert_eq!(
            w.start_again_href(),
            "/.auth/login?rd=https%3A%2F%2Fapp.example.com%2Fx%3Fy%3D1%26z&email=a%2Bb%40example.com"
        );
    }
}
