//! Server-rendered HTML pages (login, check your email, confirm, continue, messages, whoami) from embedded templates.

use minijinja::{context, Environment, Value};

/// Compiled page templates; HTML auto-escaping is on for every page.
pub struct Pages {
    env: Environment<'static>,
}

const SITE: &str = "Portcullis";

impl Pages {
    pub fn new() -> Result<Self, String> {
        let mut env = Environment::new();
        let pages: [(&str, &str); 9] = [
            (
                "continue.html",
                include_str!("../../templates/pages/continue.html"),
            ),
            (
                "sessions.html",
                include_str!("../../templates/pages/sessions.html"),
            ),
            (
                "admin.html",
                include_str!("../../templates/pages/admin.html"),
            ),
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
                "message.html",
                include_str!("../../templates/pages/message.html"),
            ),
            (
                "whoami.html",
                include_str!("../../templates/pages/whoami.html"),
            ),
        ];
        for (name, src) in pages {
            env.add_template(name, src)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        env.add_filter("sentence", sentence);
        Ok(Pages { env })
    }

    /// Renders a page; `ctx` is merged with the site name. Falls back to a plain message on error.
    pub fn render(&self, name: &str, ctx: Value) -> String {
        let ctx = context! { site => SITE, ..ctx };
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(template = name, error = %e, "page template failed");
                "<!doctype html><title>Error</title><p>Something went wrong.</p>".to_string()
            }
        }
    }

    /// A titled message page with an optional link.
    pub fn message(&self, title: &str, message: &str, action: Option<(&str, &str)>) -> String {
        self.render(
            "message.html",
            context! {
                title => title,
                message => message,
                action_href => action.map(|a| a.0),
                action_label => action.map(|a| a.1),
            },
        )
    }
}

/// The `sentence` filter: "the domain is not valid" -> "The domain is not valid." (messages
/// are written lower-case for JSON; a page shows them as sentences).
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
        let p = Pages::new().unwrap();
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
                code_length => code_length, ttl_minutes => 15, cooldown => 30, rd_param => "%2F",
                error => error,
            },
        )
    }

    #[test]
    fn the_code_field_pattern_follows_the_code_length() {
        let p = Pages::new().unwrap();
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
        let p = Pages::new().unwrap();
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
        let p = Pages::new().unwrap();
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
        let p = Pages::new().unwrap();
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
