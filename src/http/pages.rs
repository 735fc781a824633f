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
