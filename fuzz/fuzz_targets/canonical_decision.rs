//! The canonical request view: for any raw path (and host spelling), the gateway's decision is
//! never laxer than its decision for the canonical form, nor than for what a generous upstream
//! (every escape decoded twice, `\` as `/`, `;` parameters stripped or kept, case folded) acts
//! on — unless the gateway refused the request (400). Canonicalising is idempotent.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::request::{canonical_authority, canonicalize};
use portcullis::routing::decide;
use portcullis::Config;

/// Nested restrictive prefixes, public paths and a public catch-all (as in the unit table test).
const CONFIG: &str = "public_url: https://auth.example.com
access: { allowed_domains: [example.com] }
routes:
  - { host: app.example.com, upstream: 'http://127.0.0.1:1', access: { public: true } }
  - { host: app.example.com, path_prefix: /admin, upstream: 'http://127.0.0.1:2', access: { allowed_emails: [boss@example.com] } }
  - { host: app.example.com, path_prefix: /admin/reports, upstream: 'http://127.0.0.1:3', access: { allowed_emails: [boss@example.com, carol@example.com] } }
  - { host: app.example.com, path_prefix: /team, upstream: 'http://127.0.0.1:4', access: { allowed_domains: [example.com] }, public_paths: [/team/public/, /team/health] }
  - { host: '*', upstream: 'http://127.0.0.1:5', access: { public: true } }
";

const PEOPLE: [&str; 4] = ["boss@example.com", "carol@example.com", "alice@example.com", "eve@other.org"];

/// 0 = refused (400/404), 1..=15 = bitmask of who may pass, 16 = public.
fn verdict(cfg: &Config, host: &str, path: &str) -> u8 {
    let Ok(a) = canonical_authority(host) else { return 0 };
    match decide(&cfg.routes, &a.host, &canonicalize(path), cfg.ambiguous_paths) {
        Err(_) | Ok(None) => 0,
        Ok(Some(d)) if d.public => 16,
        Ok(Some(d)) => PEOPLE
            .iter()
            .enumerate()
            .filter(|(_, p)| d.allows(p))
            .fold(0, |m, (i, _)| m | 1 << i),
    }
}

fn not_laxer(a: u8, b: u8) -> bool {
    a == 0 || b == 16 || (a != 16 && a & !b == 0)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hx = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hx(b[i + 1]), hx(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn upstream_view(raw: &str, strip_params: bool) -> String {
    let twice = decode(&decode(raw)).replace('\\', "/");
    let mut segs: Vec<&str> = Vec::new();
    for seg in twice.split('/') {
        let seg = if strip_params { seg.split(';').next().unwrap_or("") } else { seg };
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let n: String = segs.iter().map(|s| format!("/{s}")).collect();
    if n.is_empty() { "/".into() } else { n }
}

fuzz_target!(|data: &[u8]| {
    static CFGS: OnceLock<[Config; 2]> = OnceLock::new();
    let cfgs = CFGS.get_or_init(|| {
        let p = std::path::Path::new("fuzz.yaml");
        let strict = Config::parse(CONFIG, p).expect("fuzz config parses");
        let forward = Config::parse(&format!("{CONFIG}ambiguous_paths: forward\n"), p).expect("parses");
        [strict, forward]
    });
    let Ok(input) = std::str::from_utf8(data) else { return };
    // First line: an optional host spelling; the rest: the path.
    let (host, raw) = match input.split_once('\n') {
        Some((h, p)) => (h, p),
        None => ("app.example.com", input),
    };
    if !raw.starts_with('/') || raw.contains(['?', '#']) {
        return;
    }
    let c = canonicalize(raw);
    let again = canonicalize(&c.primary);
    assert_eq!(again.primary, c.primary, "not idempotent for {raw:?}");
    for cfg in cfgs {
        let got = verdict(cfg, host, raw);
        let canonical_host = canonical_authority(host).map(|a| a.host.into_owned());
        let Ok(ch) = canonical_host else {
            assert_eq!(got, 0, "bad host {host:?} was not refused");
            continue;
        };
        let by_canonical = verdict(cfg, &ch, &c.primary);
        assert!(not_laxer(got, by_canonical), "{host:?} {raw:?}: {got} laxer than canonical {:?}: {by_canonical}", c.primary);
        for strip in [true, false] {
            let v = upstream_view(raw, strip);
            for view in [v.to_ascii_lowercase(), v] {
                let by_upstream = verdict(cfg, &ch, &view);
                if by_upstream == 0 {
                    continue;
                }
                assert!(not_laxer(got, by_upstream), "{host:?} {raw:?}: {got} laxer than upstream view {view:?}: {by_upstream}");
            }
        }
    }
});
