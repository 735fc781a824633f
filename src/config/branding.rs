//! `branding:`: the site name, logo, accent colour and support contact every page and mail
//! shows, and the folder of page templates that replace the built-in ones; validated here,
//! colours included (an accent must carry white button text at WCAG AA, 4.5:1).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::file::RawBranding;
use super::Validator;

/// The page templates an operator may replace (`branding.templates_dir/<name>`).
pub const PAGE_TEMPLATES: [&str; 11] = [
    "base.html",
    "login.html",
    "check_email.html",
    "confirm.html",
    "continue.html",
    "message.html",
    "signed_in.html",
    "logout.html",
    "sessions.html",
    "admin.html",
    "whoami.html",
];

/// The name pages show when `branding.name` is not set.
pub const DEFAULT_NAME: &str = "Portcullis";

/// The built-in accent (light theme), also the mail button's colour by default.
pub const DEFAULT_ACCENT: &str = "#2f5bea";

/// WCAG AA contrast for normal text.
const AA: f64 = 4.5;

/// The dark theme's card colour (`--card` in `templates/pages/base.html`): the dark-mode accent
/// is text on it.
const DARK_CARD: Rgb = Rgb(0x18, 0x1c, 0x25);

/// Largest logo file (it is inlined into every page as a `data:` URL).
const MAX_LOGO_BYTES: usize = 64 * 1024;

/// The validated `branding:` block.
#[derive(Debug, Clone, Default)]
pub struct Branding {
    /// `branding.name`; pages fall back to [`DEFAULT_NAME`], mails to the public host.
    pub name: Option<String>,
    pub logo: Option<Logo>,
    pub accent: Option<Accent>,
    pub support: Option<Support>,
    /// Page templates replacing built-in ones: (file name, source).
    pub pages: Vec<(String, String)>,
}

impl Branding {
    /// The name pages show.
    pub fn site_name(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_NAME)
    }

    /// What the pages show, in words (`portcullis check`).
    pub fn describe(&self) -> String {
        let mut d = format!("\"{}\"", self.site_name());
        match &self.accent {
            Some(a) => {
                let _ = write!(d, ", accent {} (dark mode {})", a.light, a.dark);
            }
            None => d.push_str(", built-in colours"),
        }
        match &self.logo {
            Some(Logo {
                origin: Some(_),
                src,
            }) => {
                let _ = write!(d, ", logo {src}");
            }
            Some(_) => d.push_str(", logo (file, inlined)"),
            None => {}
        }
        if let Some(s) = &self.support {
            let _ = write!(d, ", support {}", s.label);
        }
        if !self.pages.is_empty() {
            let names: Vec<&str> = self.pages.iter().map(|(n, _)| n.as_str()).collect();
            let _ = write!(d, ", own templates: {}", names.join(", "));
        }
        d
    }
}

/// A logo: where pages load it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logo {
    /// A `data:` URL (from a file) or an `https://` URL.
    pub src: String,
    /// For an https URL, its origin (added to the pages' `img-src`).
    pub origin: Option<String>,
}

/// The accent colour in both themes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accent {
    /// As configured: button background under white text, links on the white card.
    pub light: String,
    /// For dark mode: the accent lightened until it reads at 4.5:1 on the dark card (buttons
    /// then carry dark text, as the built-in dark theme does).
    pub dark: String,
}

/// How users reach a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    /// `mailto:…` or an http(s) URL.
    pub href: String,
    /// What the link says.
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rgb(u8, u8, u8);

impl Rgb {
    fn parse(s: &str) -> Option<Rgb> {
        let hex = s.strip_prefix('#')?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
        Some(Rgb(byte(0)?, byte(2)?, byte(4)?))
    }

    fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }

    /// Relative luminance (WCAG 2.1).
    fn luminance(self) -> f64 {
        let lin = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.039_28 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(self.0) + 0.7152 * lin(self.1) + 0.0722 * lin(self.2)
    }

    /// Mixes towards `to` by `t` (0 to 1).
    fn mix(self, to: Rgb, t: f64) -> Rgb {
        let m = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
        Rgb(m(self.0, to.0), m(self.1, to.1), m(self.2, to.2))
    }
}

const WHITE: Rgb = Rgb(255, 255, 255);
const BLACK: Rgb = Rgb(0, 0, 0);

/// WCAG contrast ratio of two colours (1 to 21).
fn contrast(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (a.luminance(), b.luminance());
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// `from` mixed towards `to` in the smallest step that reaches `AA` against `against`.
fn nearest_readable(from: Rgb, to: Rgb, against: Rgb) -> Rgb {
    (0..=100)
        .map(|i| from.mix(to, f64::from(i) / 100.0))
        .find(|c| contrast(*c, against) >= AA)
        .unwrap_or(to)
}

/// The `data:` media type of a logo file, by its extension.
fn image_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        _ => return None,
    })
}

/// `path` read relative to the folder of the configuration file (as `data_dir` is).
fn beside(config: &Path, path: &str) -> PathBuf {
    match config.parent() {
        Some(dir) if Path::new(path).is_relative() => dir.join(path),
        _ => PathBuf::from(path),
    }
}

impl Validator {
    pub(super) fn branding(&mut self, raw: RawBranding, config: &Path) -> Branding {
        let name = raw
            .name
            .as_deref()
            .and_then(|n| self.one_line("branding.name", n, 60));
        let logo = raw.logo.as_deref().and_then(|l| self.logo(l, config));
        let accent = raw.accent.as_deref().and_then(|a| self.accent(a));
        let support = raw.support.as_deref().and_then(|s| self.support(s));
        let pages = match raw.templates_dir.as_deref() {
            Some(dir) => self.page_templates(&beside(config, dir)),
            None => Vec::new(),
        };
        Branding {
            name,
            logo,
            accent,
            support,
            pages,
        }
    }

    fn one_line(&mut self, key: &str, value: &str, max: usize) -> Option<String> {
        let v = value.trim();
        if v.is_empty() {
            self.problem(key, "is empty; remove the key or give it a value");
            None
        } else if v.contains(['\r', '\n']) {
            self.problem(key, "must be one line");
            None
        } else if v.chars().count() > max {
            self.problem(key, format!("is longer than {max} characters"));
            None
        } else {
            Some(v.to_string())
        }
    }

    fn logo(&mut self, value: &str, config: &Path) -> Option<Logo> {
        const KEY: &str = "branding.logo";
        if value.starts_with("http://") {
            self.problem(KEY, format!("`{value}` is http: use an https URL (browsers block http images on https pages) or a file"));
            return None;
        }
        if value.starts_with("https://") {
            return match url::Url::parse(value) {
                Ok(u) if u.host_str().is_some() && u.username().is_empty() => Some(Logo {
                    src: u.to_string(),
                    origin: Some(u.origin().ascii_serialization()),
                }),
                _ => {
                    self.problem(KEY, format!("`{value}` is not an https URL"));
                    None
                }
            };
        }
        let path = beside(config, value);
        let Some(media) = image_type(&path) else {
            self.problem(
                KEY,
                format!("`{value}`: use a .png, .jpg, .gif, .webp or .svg file, or an https URL"),
            );
            return None;
        };
        self.watched.push(path.clone());
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() > MAX_LOGO_BYTES => {
                self.problem(
                    KEY,
                    format!(
                        "`{}` is {} KiB; at most {} KiB (it is part of every page)",
                        path.display(),
                        bytes.len().div_ceil(1024),
                        MAX_LOGO_BYTES / 1024
                    ),
                );
                None
            }
            Ok(bytes) => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                Some(Logo {
                    src: format!("data:{media};base64,{b64}"),
                    origin: None,
                })
            }
            Err(e) => {
                self.problem(KEY, format!("cannot read `{}`: {e}", path.display()));
                None
            }
        }
    }

    fn accent(&mut self, value: &str) -> Option<Accent> {
        const KEY: &str = "branding.accent";
        let Some(c) = Rgb::parse(value.trim()) else {
            self.problem(
                KEY,
                format!("`{value}` is not a colour as #rrggbb (e.g. \"{DEFAULT_ACCENT}\")"),
            );
            return None;
        };
        let ratio = contrast(c, WHITE);
        if ratio < AA {
            let darker = nearest_readable(c, BLACK, WHITE);
            self.problem(
                KEY,
                format!(
                    "`{value}` gives white button text a contrast of {ratio:.2}:1; at least 4.5:1 is needed (WCAG AA). A darker shade such as `{}` ({:.2}:1) reads well",
                    darker.hex(),
                    contrast(darker, WHITE)
                ),
            );
            return None;
        }
        Some(Accent {
            light: c.hex(),
            dark: nearest_readable(c, WHITE, DARK_CARD).hex(),
        })
    }

    fn support(&mut self, value: &str) -> Option<Support> {
        const KEY: &str = "branding.support";
        let v = value.trim();
        if v.starts_with("https://") || v.starts_with("http://") {
            return match url::Url::parse(v) {
                Ok(u) if u.host_str().is_some() => Some(Support {
                    href: u.to_string(),
                    label: v.to_string(),
                }),
                _ => {
                    self.problem(KEY, format!("`{v}` is not a URL"));
                    None
                }
            };
        }
        match crate::auth::address::parse_address(v.strip_prefix("mailto:").unwrap_or(v)) {
            Ok(a) => Some(Support {
                href: format!("mailto:{}", a.canonical()),
                label: a.canonical().to_string(),
            }),
            Err(e) => {
                self.problem(
                    KEY,
                    format!("`{v}` is neither an email address ({e}) nor an http(s) URL"),
                );
                None
            }
        }
    }

    /// Reads the page templates of `dir`: each must be named like a built-in page and parse.
    fn page_templates(&mut self, dir: &Path) -> Vec<(String, String)> {
        const KEY: &str = "branding.templates_dir";
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.problem(KEY, format!("cannot read `{}`: {e}", dir.display()));
                return Vec::new();
            }
        };
        // The folder itself is watched too: a file added or removed there reloads.
        self.watched.push(dir.to_path_buf());
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        let mut pages = Vec::new();
        for path in names {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if name.starts_with('.') || !path.is_file() {
                continue;
            }
            if !PAGE_TEMPLATES.contains(&name.as_str()) {
                let mut known = String::new();
                for (i, p) in PAGE_TEMPLATES.iter().enumerate() {
                    let _ = write!(known, "{}{p}", if i == 0 { "" } else { ", " });
                }
                self.problem(
                    KEY,
                    format!("`{name}` is not a page of the gateway; the pages are {known}"),
                );
                continue;
            }
            self.watched.push(path.clone());
            let source = match std::fs::read_to_string(&path) {
                Ok(s) => s,
                Err(e) => {
                    self.problem(KEY, format!("cannot read `{}`: {e}", path.display()));
                    continue;
                }
            };
            let mut env = minijinja::Environment::new();
            if let Err(e) = env.add_template(&name, &source) {
                self.problem(KEY, format!("`{}`: {e}", path.display()));
                continue;
            }
            pages.push((name, source));
        }
        pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contrast_follows_wcag() {
        assert!((contrast(WHITE, BLACK) - 21.0).abs() < 1e-9);
        // The built-in colours, as base.html documents them.
        let accent = Rgb::parse(DEFAULT_ACCENT).unwrap();
        assert!((contrast(accent, WHITE) - 5.52).abs() < 0.01);
        let dark_accent = Rgb::parse("#6d8cff").unwrap();
        assert!((contrast(dark_accent, WHITE) - 3.07).abs() < 0.01);
        assert!(contrast(dark_accent, DARK_CARD) >= AA);
    }

    #[test]
    fn a_readable_dark_accent_is_derived() {
        for light in ["#2f5bea", "#0b6e4f", "#8a1538", "#000000", "#595959"] {
            let c = Rgb::parse(light).unwrap();
            assert!(contrast(c, WHITE) >= AA, "{light}");
            let dark = nearest_readable(c, WHITE, DARK_CARD);
            assert!(contrast(dark, DARK_CARD) >= AA, "{light} -> {}", dark.hex());
            // Dark button text (the dark theme's --on-accent, #0f1218) reads on it too.
            assert!(contrast(dark, Rgb(0x0f, 0x12, 0x18)) >= AA, "{light}");
        }
    }

    const MIN: &str = "public_url: http://127.0.0.1:8080\nupstream: builtin:whoami\naccess: { allowed_domains: [example.com] }\n";

    fn parse_in(dir: &Path, extra: &str) -> Result<super::super::Config, String> {
        super::super::Config::parse(&format!("{MIN}{extra}"), &dir.join("portcullis.yaml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn branding_is_read_relative_to_the_config_file_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("logo.svg"),
            "<svg xmlns='http://www.w3.org/2000/svg'/>",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("pages")).unwrap();
        std::fs::write(
            dir.path().join("pages/login.html"),
            "{% extends \"base.html\" %}{% block content %}ours{% endblock %}",
        )
        .unwrap();
        let c = parse_in(
            dir.path(),
            "branding: { name: ' Acme tools ', logo: logo.svg, accent: '#0B6E4F', support: 'Help@Example.com', templates_dir: pages }\n",
        )
        .unwrap();
        let b = &c.branding;
        assert_eq!(b.site_name(), "Acme tools");
        let logo = b.logo.as_ref().unwrap();
        assert!(
            logo.src.starts_with("data:image/svg+xml;base64,"),
            "{logo:?}"
        );
        assert_eq!(logo.origin, None);
        assert_eq!(b.accent.as_ref().unwrap().light, "#0b6e4f");
        assert_eq!(
            b.support,
            Some(Support {
                href: "mailto:help@example.com".into(),
                label: "help@example.com".into()
            })
        );
        assert_eq!(b.pages.len(), 1);
        assert_eq!(b.pages[0].0, "login.html");
        // The logo, the folder and the template are watched for reloads.
        for f in ["logo.svg", "pages", "pages/login.html"] {
            assert!(c.watched_files.contains(&dir.path().join(f)), "{f}");
        }

        let c = parse_in(
            dir.path(),
            "branding: { logo: 'https://cdn.example.com:8443/a/logo.png', support: 'https://help.example.com/x' }\n",
        )
        .unwrap();
        assert_eq!(
            c.branding.logo.unwrap().origin.as_deref(),
            Some("https://cdn.example.com:8443")
        );
        assert_eq!(
            c.branding.support.unwrap().href,
            "https://help.example.com/x"
        );
        assert_eq!(
            parse_in(dir.path(), "").unwrap().branding.site_name(),
            "Portcullis"
        );
    }

    #[test]
    fn a_pale_accent_is_refused_naming_the_key_and_a_darker_shade() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse_in(dir.path(), "branding: { accent: '#6d8cff' }\n").unwrap_err();
        assert!(err.contains("branding.accent: `#6d8cff` gives white button text a contrast of 3.07:1; at least 4.5:1 is needed (WCAG AA)"), "{err}");
        let suggested = err.split("such as `").nth(1).unwrap().get(..7).unwrap();
        assert!(
            contrast(Rgb::parse(suggested).unwrap(), WHITE) >= AA,
            "{err}"
        );
        assert!(parse_in(
            dir.path(),
            &format!("branding: {{ accent: '{suggested}' }}\n")
        )
        .is_ok());
    }

    #[test]
    fn every_branding_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pages")).unwrap();
        std::fs::write(dir.path().join("pages/logn.html"), "x").unwrap();
        std::fs::write(dir.path().join("pages/confirm.html"), "{% if %}").unwrap();
        std::fs::write(dir.path().join("big.png"), vec![0u8; 70 * 1024]).unwrap();
        let err = parse_in(
            dir.path(),
            "branding: { name: '', logo: 'http://x.example/l.png', accent: 'blue', support: 'nobody', templates_dir: pages }\n",
        )
        .unwrap_err();
        for want in [
            "branding.name: is empty",
            "branding.logo: `http://x.example/l.png` is http",
            "branding.accent: `blue` is not a colour as #rrggbb",
            "branding.support: `nobody` is neither an email address",
            "branding.templates_dir: `logn.html` is not a page of the gateway; the pages are base.html, login.html",
            "branding.templates_dir: `",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
        assert!(err.contains("confirm.html`: "), "{err}");
        for (logo, want) in [
            ("big.png", "is 70 KiB; at most 64 KiB"),
            ("missing.png", "cannot read"),
            ("logo.bmp", "use a .png, .jpg, .gif, .webp or .svg file"),
        ] {
            let err = parse_in(dir.path(), &format!("branding: {{ logo: {logo} }}\n")).unwrap_err();
            assert!(err.contains(want), "{logo}: {err}");
        }
        let err = parse_in(dir.path(), "branding: { templates_dir: nowhere }\n").unwrap_err();
        assert!(err.contains("branding.templates_dir: cannot read"), "{err}");
        let err = parse_in(dir.path(), "branding: { colour: '#000000' }\n").unwrap_err();
        assert!(err.contains("branding.colour: unknown key"), "{err}");
    }

    #[test]
    fn colours_parse_strictly() {
        assert_eq!(Rgb::parse("#A0b1C2"), Some(Rgb(0xa0, 0xb1, 0xc2)));
        for bad in ["a0b1c2", "#abc", "#a0b1c2ff", "#g0b1c2", "", "#"] {
            assert_eq!(Rgb::parse(bad), None, "{bad}");
        }
    }
}
