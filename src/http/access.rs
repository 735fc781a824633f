//! The access log: one line per request (target `portcullis::access`), written straight into the batched log sink in exactly the text or JSON shape `tracing_subscriber` gives every other line, without going through its generic formatter (which costs a request more than everything else it logs).
//!
//! The line is still governed by `PORTCULLIS_LOG` (e.g. `portcullis::access=off` or `warn`
//! silences it). Without an installed sink (the library used on its own, unit tests) it is an
//! ordinary `tracing` event.

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::logsink;
use crate::proxy::headers::{decimal, push_ip};

/// What one access line says.
pub struct Entry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub peer: IpAddr,
    pub elapsed: Duration,
    pub request_id: &'a str,
}

/// Logs one request.
pub fn log(e: &Entry<'_>) {
    if !tracing::enabled!(target: "portcullis::access", tracing::Level::INFO) {
        return;
    }
    let Some((sink, json)) = logsink::installed() else {
        tracing::info!(
            target: "portcullis::access",
            method = e.method,
            path = e.path,
            status = e.status,
            peer = %e.peer,
            ms = %Millis(e.elapsed),
            request_id = e.request_id,
            "request"
        );
        return;
    };
    let now = SystemTime::now();
    sink.append_with(|line| {
        if json {
            write_json(line, now, e);
        } else {
            write_text(line, now, e);
        }
    });
}

thread_local! {
    /// The last second formatted (`2026-12-02T06:39:10`), reused for every line in that second.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// A duration as milliseconds with two decimals (`0.10`): the `ms` field.
pub struct Millis(pub Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut b = String::with_capacity(16);
        push_millis(&mut b, self.0);
        f.write_str(&b)
    }
}

fn push_millis(b: &mut String, d: Duration) {
    let hundredths = (d.as_micros() + 5) / 10;
    push_u64(b, u64::try_from(hundredths / 100).unwrap_or(u64::MAX));
    b.push('.');
    let frac = (hundredths % 100) as u8;
    b.push(char::from(b'0' + frac / 10));
    b.push(char::from(b'0' + frac % 10));
}

fn push_u64(b: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    b.push_str(std::str::from_utf8(decimal(n, &mut buf)).unwrap_or_default());
}

/// `2026-12-02T06:39:10.931721Z` (UTC, microseconds), as `tracing_subscriber` prints it.
fn push_timestamp(b: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, civil(secs));
        }
        b.push_str(std::str::from_utf8(&c.1).unwrap_or_default());
    });
    b.push('.');
    let micros = since.subsec_micros();
    let mut tmp = [b'0'; 6];
    let mut n = micros;
    for d in tmp.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    b.push_str(std::str::from_utf8(&tmp).unwrap_or_default());
    b.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (proleptic Gregorian, UTC; days-from-civil inverse).
fn civil(secs: u64) -> [u8; 19] {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = [0u8; 19];
    let two = |o: &mut [u8], v: i64| {
        o[0] = b'0' + (v / 10 % 10) as u8;
        o[1] = b'0' + (v % 10) as u8;
    };
    let y = year.clamp(0, 9999);
    two(&mut out[0..2], y / 100);
    two(&mut out[2..4], y % 100);
    out[4] = b'-';
    two(&mut out[5..7], month);
    out[7] = b'-';
    two(&mut out[8..10], day);
    out[10] = b'T';
    two(&mut out[11..13], (rem / 3600) as i64);
    out[13] = b':';
    two(&mut out[14..16], (rem / 60 % 60) as i64);
    out[16] = b':';
    two(&mut out[17..19], (rem % 60) as i64);
    out
}

/// A string as Rust's `{:?}` prints it (what `tracing_subscriber` does for `&str` fields).
fn push_debug_str(b: &mut String, s: &str) {
    push_quoted(b, s, false);
}

/// A JSON string (RFC 8259 escapes).
fn push_json_str(b: &mut String, s: &str) {
    push_quoted(b, s, true);
}

/// `s` in double quotes with `"`, `\\`, newline, carriage return and tab escaped; other control
/// characters as JSON's `\u00XX` (`json`) or as Rust's `{:?}` writes them.
fn push_quoted(b: &mut String, s: &str, json: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    b.push('"');
    // The usual path: printable ASCII with nothing to escape goes in as it is.
    if s.bytes()
        .all(|c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')
    {
        b.push_str(s);
        b.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => b.push_str("\\\""),
            '\\' => b.push_str("\\\\"),
            '\n' => b.push_str("\\n"),
            '\r' => b.push_str("\\r"),
            '\t' => b.push_str("\\t"),
            c if json && (c as u32) < 0x20 => {
                let n = c as u32;
                b.push_str("\\u00");
                b.push(char::from(HEX[(n >> 4) as usize]));
                b.push(char::from(HEX[(n & 0xf) as usize]));
            }
            c if !json && c.is_control() => b.extend(c.escape_debug()),
            c => b.push(c),
        }
    }
    b.push('"');
}

/// `<time>  INFO portcullis::access: request method=GET path="/" status=200 peer=… ms=… request_id="…"`
fn write_text(b: &mut String, now: SystemTime, e: &Entry<'_>) {
    push_timestamp(b, now);
    b.push_str("  INFO portcullis::access: request method=");
    b.push_str(e.method);
    b.push_str(" path=");
    push_debug_str(b, e.path);
    b.push_str(" status=");
    push_u64(b, u64::from(e.status));
    b.push_str(" peer=");
    push_ip(b, e.peer);
    b.push_str(" ms=");
    push_millis(b, e.elapsed);
    b.push_str(" request_id=");
    push_debug_str(b, e.request_id);
    b.push('\n');
}

/// The same line as `tracing_subscriber`'s JSON format writes it.
fn write_json(b: &mut String, now: SystemTime, e: &Entry<'_>) {
    b.push_str("{\"timestamp\":\"");
    push_timestamp(b, now);
    b.push_str("\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":");
    push_json_str(b, e.method);
    b.push_str(",\"path\":");
    push_json_str(b, e.path);
    b.push_str(",\"status\":");
    push_u64(b, u64::from(e.status));
    b.push_str(",\"peer\":\"");
    push_ip(b, e.peer);
    b.push_str("\",\"ms\":\"");
    push_millis(b, e.elapsed);
    b.push_str("\",\"request_id\":");
    push_json_str(b, e.request_id);
    b.push_str("},\"target\":\"portcullis::access\"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a str, id: &'a str) -> Entry<'a> {
        Entry {
            method: "POST",
            path,
            status: 400,
            peer: "127.0.0.1".parse().unwrap(),
            elapsed: Duration::from_micros(215),
            request_id: id,
        }
    }

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    #[test]
    fn text_line_matches_tracing_subscribers_shape() {
        let mut b = String::new();
        // 2026-12-02T06:39:10.931721Z
        write_text(
            &mut b,
            at(1_796_193_550, 931_721),
            &entry("/.auth/api/verify", "77c5f30000000001"),
        );
        assert_eq!(
            b.clone(),
            "2026-12-02T06:39:10.931721Z  INFO portcullis::access: request method=POST \
             path=\"/.auth/api/verify\" status=400 peer=127.0.0.1 ms=0.22 \
             request_id=\"77c5f30000000001\"\n"
        );
    }

    #[test]
    fn json_line_matches_tracing_subscribers_shape_and_parses() {
        let mut b = String::new();
        write_json(&mut b, at(1_796_193_550, 5), &entry("/a%22b\\c\"\n", "x"));
        let text = b.clone();
        assert_eq!(
            text,
            "{\"timestamp\":\"2026-12-02T06:39:10.000005Z\",\"level\":\"INFO\",\"fields\":\
             {\"message\":\"request\",\"method\":\"POST\",\"path\":\"/a%22b\\\\c\\\"\\n\",\
             \"status\":400,\"peer\":\"127.0.0.1\",\"ms\":\"0.22\",\"request_id\":\"x\"},\
             \"target\":\"portcullis::access\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["fields"]["path"], "/a%22b\\c\"\n");
        assert_eq!(v["fields"]["status"], 400);
    }

    #[test]
    fn debug_quoting_is_rusts() {
        for s in [
            "/plain",
            "/q\"uote",
            "/back\\slash",
            "/nl\n\t\r",
            "/ctl\u{1}\u{7f}",
            "/ünï",
        ] {
            let mut b = String::new();
            push_debug_str(&mut b, s);
            assert_eq!(b.clone(), format!("{s:?}"), "{s:?}");
        }
    }

    #[test]
    fn json_strings_round_trip_for_every_control_character() {
        let s: String = (0u8..0x80).map(char::from).collect();
        let mut b = String::new();
        push_json_str(&mut b, &s);
        let back: String = serde_json::from_str(&b).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn civil_dates_agree_with_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_251_199, "2024-02-29T23:59:59"),
            (1_796_193_550, "2026-12-02T06:39:10"),
            (4_102_444_800, "2100-01-01T00:00:00"),
        ];
        for (secs, want) in cases {
            assert_eq!(std::str::from_utf8(&civil(secs)).unwrap(), want, "{secs}");
        }
    }

    #[test]
    fn milliseconds_have_two_decimals_and_round() {
        for (us, want) in [
            (0, "0.00"),
            (4, "0.00"),
            (5, "0.01"),
            (98, "0.10"),
            (215, "0.22"),
            (1_000, "1.00"),
            (123_456, "123.46"),
            (9_999_995, "10000.00"),
        ] {
            assert_eq!(Millis(Duration::from_micros(us)).to_string(), want, "{us}");
        }
    }
}
