//! Server-rendered HTML pages (login, check your email, confirm, continue, messages, sign out,
//! sessions, admin, whoami) from the built-in templates or the operator's
//! (`branding.templates_dir`), with the branding, and the `Content-Security-Policy` each needs.

use arc_swap::ArcSwap;
use http::HeaderValue;
use minijinja::{context, Environment, Value};
use serde::Serialize;

use crate::config::Branding;

/// The built-in page templates, by name.
const BUILT_IN: [(&str, &str); 11] = [
    ("base.html", include_str!("../../templates/pages/base.html")),
    (
        "login.html",
        include_str!("../../templates/pages/login.html"),
    ),
    (
        "check_email.html",
        include_str!("../../templates/pages/check_email.html"),
    ),
    (
        "confirm.html",
        include_str!("../../templates/pages/confirm.html"),
    ),
    (
        "continue.html",
        include_str!("../../templates/pages/continue.html"),
    ),
    (
        "message.html",
        include_str!("../../templates/pages/message.html"),
    ),
    (
        "signed_in.html",
        include_str!("../../templates/pages/signed_in.html"),
    ),
    (
        "logout.html",
        include_str!("../../templates/pages/logout.html"),
    ),
    (
        "sessions.html",
        include_str!("../../templates/pages/sessions.html"),
    ),
    (
        "admin.html",
        include_str!("../../templates/pages/admin.html"),
    ),
    (
        "whoami.html",
        include_str!("../../templates/pages/whoami.html"),
    ),
];

/// The one inline script of the gateway's pages: counts the resend button's wait down and
/// enables it. Allowed by its hash in the pages' `Content-Security-Policy` (nothing else runs);
/// without it the page still works (the server renders the button disabled with the seconds
/// left, and a reload shows the current state).
pub const COUNTDOWN_SCRIPT: &str = "(function(){var b=document.getElementById('resend');var w=document.getElementById('resend-wait');if(!b||!w)return;var n=parseInt(b.getAttribute('data-wait'),10)||0;function t(){if(n<=0){b.disabled=false;w.textContent='';return;}w.textContent=' (in '+n+(n==1?' second)':' seconds)');n--;setTimeout(t,1000);}t();})();";

/// The CSP of pages without the gateway's script or images from elsewhere.
pub const STRICT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A rendered page and the `Content-Security-Policy` it needs.
#[derive(Debug, Clone)]
pub struct Page {
    pub html: String,
    pub csp: HeaderValue,
}

impl From<String> for Page {
    /// A page made elsewhere: the strict policy (no script, images from the gateway only).
    fn from(html: String) -> Page {
        Page {
            html,
            csp: HeaderValue::from_static(STRICT_CSP),
        }
    }
}

impl std::fmt::Display for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.html)
    }
}

impl std::ops::Deref for Page {
    type Target = str;
    fn deref(&self) -> &str {
        &self.html
    }
}

/// The policy of the gateway's own pages: the strict one plus the countdown script's hash and
/// `img_origin` (a branding logo served from elsewhere).
fn page_csp(img_origin: Option<&str>) -> HeaderValue {
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD
        .encode(crate::crypto::sha256(COUNTDOWN_SCRIPT.as_bytes()));
    let img = match img_origin {
        Some(o) => format!("'self' data: {o}"),
        None => "'self' data:".into(),
    };
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; img-src {img}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static(STRICT_CSP))
}

/// A message page's way on: a link, or a button posting a form.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// Where the link goes, or where the form posts.
    pub href: String,
    pub label: String,
    /// A button posting to `href` (with `fields`) instead of a link.
    pub post: bool,
    /// Hidden form fields.
    pub fields: Vec<(String, String)>,
}

impl Action {
    pub fn link(href: String, label: &str) -> Action {
        Action {
            href,
            label: label.into(),
            post: false,
            fields: Vec::new(),
        }
    }

    pub fn post(href: &str, label: &str) -> Action {
        Action {
            href: href.into(),
            label: label.into(),
            post: true,
            fields: Vec::new(),
        }
    }
}

/// A titled message page.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Message<'a> {
    pub title: &'a str,
    pub message: &'a str,
    /// A status line above the message (e.g. "You are signed out.").
    pub notice: Option<&'a str>,
    /// The main way on.
    pub action: Option<Action>,
    /// A smaller second way on.
    pub secondary: Option<Action>,
}

/// Compiled page templates (built-in, or the operator's from `branding.templates_dir`) and the
/// branding they show; HTML auto-escaping is on for every page. Rebuilt on reload.
pub struct Pages {
    inner: ArcSwap<Inner>,
}

struct Inner {
    env: Environment<'static>,
    csp: HeaderValue,
    /// What every page gets besides its own context.
    brand: Value,
}

impl Pages {
    /// Compiles the pages for `branding`; an operator's template that does not compile is an error.
    pub fn new(branding: &Branding) -> Result<Self, String> {
        Ok(Pages {
            inner: ArcSwap::from_pointee(Inner::new(branding)?),
        })
    }

    /// Replaces the templates and branding (reload); on error the old ones stay.
    pub fn reload(&self, branding: &Branding) -> Result<(), String> {
        self.inner.store(std::sync::Arc::new(Inner::new(branding)?));
        Ok(())
    }

    /// Renders a page; `ctx` is merged with the branding. Falls back to a plain message on error.
    pub fn render(&self, name: &str, ctx: Value) -> Page {
        let inner = self.inner.load();
        let ctx = context! { ..ctx, ..inner.brand.clone() };
        let html = match inner.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(template = name, error = %e, "page template failed");
                "<!doctype html><title>Error</title><p>Something went wrong.</p>".to_string()
            }
        };
        Page {
            html,
            csp: inner.csp.clone(),
        }
    }

    /// A titled message page with an optional link.
    pub fn message(&self, title: &str, message: &str, action: Option<(&str, &str)>) -> Page {
        self.message_with(&Message {
            title,
            message,
            action: action.map(|(href, label)| Action::link(href.into(), label)),
            ..Message::default()
        })
    }

    /// A message page with any of its parts.
    pub fn message_with(&self, m: &Message<'_>) -> Page {
        self.render("message.html", Value::from_serialize(m))
    }
}

impl Inner {
    fn new(branding: &Branding) -> Result<Inner, String> {
        let mut env = Environment::new();
        for (name, src) in BUILT_IN {
            env.add_template(name, src)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        for (name, src) in &branding.pages {
            env.add_template_owned(name.clone(), src.clone())
                .map_err(|e| format!("branding.templates_dir: {name}: {e}"))?;
        }
        env.add_filter("sentence", sentence);
        let brand = context! {
            site => branding.site_name(),
            logo => branding.logo.as_ref().map(|l| l.src.clone()),
            accent => branding.accent.as_ref().map(|a| context! { light => a.light, dark => a.dark }),
            support => branding.support.as_ref().map(|s| context! { href => s.href, label => s.label }),
            countdown_script => Value::from_safe_string(COUNTDOWN_SCRIPT.into()),
        };
        Ok(Inner {
            env,
            csp: page_csp(branding.logo.as_ref().and_then(|l| l.origin.as_deref())),
            brand,
        })
    }
}

/// The `sentence` filter: "the domain is not valid" -> "The domain is not valid." (the gateway's
/// messages are sentences already; this keeps an operator's or an older message presentable).
fn sentence(s: &str) -> String {
    let mut chars = s.trim().chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_render_and_escape() {
        let p = Pages::new(&Branding::default()).unwrap();
        let html = p.render(
            "login.html",
            context! { title => "Sign in", rd => "\"><script>", email => "", code => true },
        );
        assert!(html.contains("&quot;&gt;&lt;script&gt;"));
        assert!(html.contains("name=\"email\""));
        let m = p.message("Oops", "<b>", Some(("/x", "Back")));
        assert!(m.contains("&lt;b&gt;"));
    }

    /// The `pattern` attribute of the code field, as the browser reads it.
    fn code_pattern(html: &str) -> &str {
        let start = html.find("pattern=\"").unwrap() + "pattern=\"".len();
        let len = html[start..].find('"').unwrap();
        &html[start..start + len]
    }

    fn check_email(p: &Pages, code_length: u32, error: Option<&str>) -> String {
        p.render(
            "check_email.html",
            context! {
                title => "Check your email", email => "a@example.com", link => true, code => true,
                code_length => code_length, ttl_minutes => 15, resend_wait => 0, rd_param => "%2F",
                error => error,
            },
        )
        .html
    }

    #[test]
    fn the_code_field_pattern_follows_the_code_length() {
        let p = Pages::new(&Branding::default()).unwrap();
        let html = check_email(&p, 6, None);
        // No unescaped `-` in a class: browsers compile `pattern` with the `v` flag, where
        // `[0-9 -]` is a syntax error (and the field then checks nothing).
        assert_eq!(
            code_pattern(&html),
            r" *[0-9](?:[ \-]?[0-9]){5} *",
            "{html}"
        );
        for attr in [
            "inputmode=\"numeric\"",
            "autocomplete=\"one-time-code\"",
            "maxlength=\"13\"",
            "title=\"The 6-digit code from the mail\"",
        ] {
            assert!(html.contains(attr), "{attr} missing: {html}");
        }
        let html = check_email(&p, 8, None);
        assert_eq!(
            code_pattern(&html),
            r" *[0-9](?:[ \-]?[0-9]){7} *",
            "{html}"
        );
        assert!(html.contains("maxlength=\"17\""), "{html}");
    }

    #[test]
    fn error_messages_read_as_sentences() {
        let p = Pages::new(&Branding::default()).unwrap();
        let html = check_email(&p, 6, Some("that code is not right; 4 attempts left"));
        assert!(
            html.contains(">That code is not right; 4 attempts left.</p>"),
            "{html}"
        );
        let html = p.render(
            "login.html",
            context! { title => "Sign in", rd => "/", email => "x", error => "the domain is not valid", code => true },
        );
        assert!(html.contains(">The domain is not valid.</p>"), "{html}");
        assert_eq!(sentence("Already a sentence."), "Already a sentence.");
        assert_eq!(sentence("  é  "), "É.");
        assert_eq!(sentence(""), "");
    }

    #[test]
    fn sign_out_everywhere_is_not_styled_as_the_primary_action() {
        let p = Pages::new(&Branding::default()).unwrap();
        let html = p.render(
            "sessions.html",
            context! { title => "Your sessions", email => "a@example.com", sessions => Vec::<()>::new(), wide => true },
        );
        let button = html
            .split("<button")
            .find(|b| b.contains("id=\"revoke-all\""))
            .unwrap();
        assert!(button.contains("class=\"danger\""), "{button}");
    }

    #[test]
    fn the_continue_page_refreshes_to_its_escaped_target() {
        let p = Pages::new(&Branding::default()).unwrap();
        let html = p.render(
            "continue.html",
            context! { title => "Signed in", target => "https://a.example/x?a=1&b=\"2", host => "a.example" },
        );
        // minijinja escapes `/` too (`&#x2f;`); the browser reads the attribute back as the URL.
        assert!(
            html.contains(
                "<meta http-equiv=\"refresh\" content=\"0;url=https:&#x2f;&#x2f;a.example&#x2f;x?a=1&amp;b=&quot;2\">"
            ),
            "{html}"
        );
        assert!(html.contains("id=\"continue\""), "{html}");
    }
}
