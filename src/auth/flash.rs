//! One-shot messages between a form post and the page it redirects to (POST-redirect-GET): a
//! short-lived, signed cookie, read and cleared by the next gateway page.
//!
//! A sign-in form answers `303` to a page that can be reloaded safely; what the post has to tell
//! ("That code is not right; 3 attempts left", "A new mail is on its way") travels in this cookie,
//! never in the URL, and never holds a code or a link. It is signed with the server's key, so
//! nothing else (an app under the same cookie domain, say) can put words on a gateway page.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::{Cookie, SameSite};
use http::{header, HeaderMap};

use crate::config::Config;
use crate::crypto;

/// How long a message waits for its page.
const MAX_AGE_SECS: i64 = 60;

/// Longest message text kept (messages are written by the gateway; this only bounds the cookie).
const MAX_TEXT: usize = 400;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something went wrong (shown as an alert).
    Error,
    /// Something happened as asked (shown as a status line).
    Notice,
}

/// A message for the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub tone: Tone,
    /// The sentence to show.
    pub text: String,
    /// The machine code of an error (`AuthError::code`), so the page can choose its heading.
    pub code: Option<String>,
    /// The address typed into the form, to show it again.
    pub email: Option<String>,
}

impl Flash {
    /// An error message with its machine code.
    pub fn error(code: &str, text: impl Into<String>) -> Flash {
        Flash {
            tone: Tone::Error,
            text: text.into(),
            code: Some(code.to_string()),
            email: None,
        }
    }

    /// A notice ("You are signed out.").
    pub fn notice(text: impl Into<String>) -> Flash {
        Flash {
            tone: Tone::Notice,
            text: text.into(),
            code: None,
            email: None,
        }
    }

    /// The same message, with the address the form held.
    pub fn with_email(mut self, email: &str) -> Flash {
        self.email = Some(email.chars().take(254).collect());
        self
    }

    fn encode(&self) -> String {
        let text: String = self.text.chars().take(MAX_TEXT).collect();
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair(
            "t",
            match self.tone {
                Tone::Error => "e",
                Tone::Notice => "n",
            },
        );
        s.append_pair("m", &text);
        if let Some(c) = &self.code {
            s.append_pair("c", c);
        }
        if let Some(e) = &self.email {
            s.append_pair("a", e);
        }
        s.finish()
    }

    fn decode(payload: &str) -> Option<Flash> {
        let mut f = Flash::notice("");
        let mut tone = None;
        for (k, v) in url::form_urlencoded::parse(payload.as_bytes()) {
            match &*k {
                "t" if v == "e" => tone = Some(Tone::Error),
                "t" if v == "n" => tone = Some(Tone::Notice),
                "m" => f.text = v.into_owned(),
                "c" => f.code = Some(v.into_owned()),
                "a" => f.email = Some(v.into_owned()),
                _ => {}
            }
        }
        f.tone = tone?;
        Some(f)
    }
}

/// The cookie's name: `{session.cookie_name}_flash`.
pub fn name(cfg: &Config) -> String {
    format!("{}_flash", cfg.session.cookie_name)
}

fn mac(key: &[u8], payload: &str) -> [u8; 32] {
    let mut msg = b"portcullis/flash/v1\0".to_vec();
    msg.extend_from_slice(payload.as_bytes());
    crypto::hmac(key, &msg)
}

fn build(cfg: &Config, value: String, max_age: i64) -> Cookie<'static> {
    Cookie::build((name(cfg), value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/.auth/")
        .secure(cfg.secure_cookies())
        .max_age(cookie::time::Duration::seconds(max_age))
        .build()
}

/// The cookie carrying `flash` to the next page, signed with `key`.
pub fn cookie(cfg: &Config, key: &[u8], flash: &Flash) -> Cookie<'static> {
    let payload = flash.encode();
    let value = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        URL_SAFE_NO_PAD.encode(&mac(key, &payload)[..16])
    );
    build(cfg, value, MAX_AGE_SECS)
}

/// The cookie that clears a read message.
pub fn removal(cfg: &Config) -> Cookie<'static> {
    let mut c = build(cfg, String::new(), 0);
    c.make_removal();
    c
}

/// The message this request carries, if its signature holds.
pub fn read(cfg: &Config, key: &[u8], headers: &HeaderMap) -> Option<Flash> {
    let name = name(cfg);
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)?;
    let (payload, sig) = value.split_once('.')?;
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    if !crypto::ct_eq(&sig, &mac(key, &payload)[..16]) {
        return None;
    }
    Flash::decode(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(
            "public_url: http://127.0.0.1:8080\nupstream: builtin:whoami\naccess: { allowed_domains: [example.com] }\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap()
    }

    fn headers(c: &Cookie<'_>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("other=1; {}={}", c.name(), c.value())
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn a_message_survives_the_round_trip_and_nothing_else_is_believed() {
        let cfg = cfg();
        let key = [7u8; 32];
        let f = Flash::error("wrong_code", "That code is not right; 4 attempts left.")
            .with_email("a+b@example.com");
        let c = cookie(&cfg, &key, &f);
        assert_eq!(c.name(), "portcullis_session_flash");
        assert_eq!(c.path(), Some("/.auth/"));
        assert_eq!(c.http_only(), Some(true));
        assert_eq!(read(&cfg, &key, &headers(&c)), Some(f.clone()));
        // Another key, a changed payload, or garbage: nothing.
        assert_eq!(read(&cfg, &[8u8; 32], &headers(&c)), None);
        let (payload, sig) = c.value().split_once('.').unwrap();
        let forged = Cookie::new(
            c.name().to_string(),
            format!("{}.{sig}", URL_SAFE_NO_PAD.encode(b"t=e&m=Pay+here")),
        );
        assert_eq!(read(&cfg, &key, &headers(&forged)), None);
        let cut = Cookie::new(c.name().to_string(), payload.to_string());
        assert_eq!(read(&cfg, &key, &headers(&cut)), None);
        assert_eq!(read(&cfg, &key, &HeaderMap::new()), None);
        let n = Flash::notice("You are signed out.");
        assert_eq!(read(&cfg, &key, &headers(&cookie(&cfg, &key, &n))), Some(n));
    }
}
