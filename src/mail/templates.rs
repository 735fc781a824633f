//! Renders the sign-in mail (plain text and HTML) from built-in or operator-supplied templates.

use minijinja::Environment;
use serde::Serialize;

const TEXT: &str = include_str!("../../templates/mail/signin.txt");
const HTML: &str = include_str!("../../templates/mail/signin.html");

/// Everything a sign-in mail may show.
#[derive(Debug, Serialize)]
pub struct SignInMail<'a> {
    /// `branding.name`, else the public host.
    pub site: &'a str,
    /// `branding.accent` (the button's colour; white text on it reads at 4.5:1 or more).
    pub accent: &'a str,
    /// `branding.logo` when it is an https URL (mail clients block `data:` images).
    pub logo: Option<&'a str>,
    /// `branding.support`: what to show, and the `mailto:` or http(s) link.
    pub support: Option<&'a str>,
    pub support_href: Option<&'a str>,
    pub subject: &'a str,
    pub email: &'a str,
    pub link: Option<&'a str>,
    pub code: Option<&'a str>,
    pub ttl_minutes: u64,
    pub requested_at: &'a str,
    pub ip: &'a str,
    pub user_agent: &'a str,
}

/// Compiled mail templates.
pub struct MailTemplates {
    env: Environment<'static>,
}

impl MailTemplates {
    /// Compiles the built-in templates, or the operator's when given; a broken template is a config error.
    pub fn new(text: Option<String>, html: Option<String>) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        env.add_template_owned("signin.txt", text.unwrap_or_else(|| TEXT.to_string()))
            .map_err(|e| format!("email.templates.text: {e}"))?;
        env.add_template_owned("signin.html", html.unwrap_or_else(|| HTML.to_string()))
            .map_err(|e| format!("email.templates.html: {e}"))?;
        Ok(MailTemplates { env })
    }

    /// Renders (text, html).
    pub fn render(&self, mail: &SignInMail<'_>) -> Result<(String, String), String> {
        let render = |name: &str| {
            self.env
                .get_template(name)
                .and_then(|t| t.render(mail))
                .map_err(|e| format!("{name}: {e}"))
        };
        Ok((render("signin.txt")?, render("signin.html")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_link_and_code_and_escapes_html() {
        let t = MailTemplates::new(None, None).unwrap();
        let m = SignInMail {
            site: "Portcullis",
            accent: "#0b6e4f",
            logo: None,
            support: Some("help@example.com"),
            support_href: Some("mailto:help@example.com"),
            subject: "Sign in",
            email: "a@example.com",
            link: Some("https://auth.example.com/.auth/verify?token=abc&x=1"),
            code: Some("012345"),
            ttl_minutes: 15,
            requested_at: "2026-01-01 00:00:00 UTC",
            ip: "10.0.0.1",
            user_agent: "<script>",
        };
        let (text, html) = t.render(&m).unwrap();
        assert!(text.contains("token=abc&x=1"));
        assert!(text.contains("012345"));
        assert!(html.contains("token=abc&amp;x=1"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("background:#0b6e4f"), "{html}");
        assert!(html.contains("mailto:help@example.com"), "{html}");
        assert!(text.contains("help@example.com"), "{text}");
    }

    #[test]
    fn broken_operator_template_is_reported() {
        assert!(MailTemplates::new(Some("{% if %}".into()), None).is_err());
    }
}
