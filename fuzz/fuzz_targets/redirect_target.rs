//! `safe_redirect`: whatever the input, the answer is an https URL on a host the gateway serves.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::auth::policy::safe_redirect;
use portcullis::Config;
use url::Url;

fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        Config::parse(
            "public_url: https://auth.example.com\nupstream: builtin:whoami\naccess: { allowed_domains: [example.com] }\nsession: { cookie_domain: .example.com }\n",
            Path::new("fuzz.yaml"),
        )
        .expect("fuzz config is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let out = safe_redirect(config(), input);
    let ctx = || format!("input {input:?} -> {out:?}");
    assert!(!out.bytes().any(|b| b < 0x20 || b == 0x7f), "control char: {}", ctx());
    assert!(!out.contains('\\'), "backslash: {}", ctx());
    assert!(!out.contains(' '), "space: {}", ctx());
    assert!(out.is_ascii(), "non-ASCII: {}", ctx());
    let u = Url::parse(&out).unwrap_or_else(|e| panic!("unparsable ({e}): {}", ctx()));
    assert_eq!(u.as_str(), out, "not in serialised form: {}", ctx());
    assert_eq!(u.scheme(), "https", "{}", ctx());
    assert!(u.username().is_empty() && u.password().is_none(), "userinfo: {}", ctx());
    assert!(u.fragment().is_none(), "fragment: {}", ctx());
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d,
        other => panic!("host {other:?}: {}", ctx()),
    };
    assert!(
        host == "auth.example.com" || host == "example.com" || host.ends_with(".example.com"),
        "foreign host {host:?}: {}",
        ctx()
    );
    // Gateway endpoints (logout, verify, ...) are never landing pages.
    let p = u.path();
    assert!(
        !p.starts_with("/.auth/") || p == "/.auth/sessions" || p == "/.auth/admin",
        "lands on a gateway endpoint: {}",
        ctx()
    );
    // A checked target passes the check again unchanged. Exception: the 4096-byte cap applies to
    // the input, and serialising percent-encodes (up to 3 bytes per input byte), so an accepted
    // target may come out longer than the cap and then fall back to `/` on a second check.
    assert!(out.len() <= 3 * 4096 + "https://auth.example.com".len(), "{} bytes: {}", out.len(), ctx());
    if out.len() <= 4096 {
        assert_eq!(safe_redirect(config(), &out), out, "not stable: {}", ctx());
    }
});
