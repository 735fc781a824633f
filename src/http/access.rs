//! The access log: one line per request (target `portcullis::access`), written straight into the batched log sink in exactly the text or JSON shape `tracing_subscriber` gives every other line, without going through its generic formatter (which costs a request more than everything else it logs).
//!
//! The line is still governed by `PORTCULLIS_LOG` (e.g. `portcullis::access=off` or `warn`
//! silences it). Without an installed sink (the library used on its own, unit tests) it is an
//! ordinary `tracing` event.

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::logsink;

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
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        if json {
            write_json(&mut line, SystemTime::now(), e);
        } else {
            write_text(&mut line, SystemTime::now(), e);
        }
        sink.append(&line);
        if line.capacity() > 64 * 1024 {
            *line = Vec::with_capacity(512);
        }
    });
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    /// The last second formatted (`2026-12-02T06:39:10`), reused for every line in that second.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// A duration as milliseconds with two decimals (`0.10`): the `ms` field.
pub struct Millis(pub Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut b = Vec::with_capacity(16);
        push_millis(&mut b, self.0);
        f.write_str(std::str::from_utf8(&b).unwrap_or("?"))
    }
}

fn push_millis(b: &mut Vec<u8>, d: Duration) {
    let hundredths = (d.as_micros() + 5) / 10;
    push_u64(b, u64::try_from(hundredths / 100).unwrap_or(u64::MAX));
    b.push(b'.');
    let frac = (hundredths % 100) as u8;
    b.push(b'0' + frac / 10);
    b.push(b'0' + frac % 10);
}

fn push_u64(b: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(&tmp[i..]);
}

fn push_ip(b: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    b.push(b'.');
                }
                push_u64(b, u64::from(*o));
            }
        }
        // Rare enough on this path to use the standard formatter (with its `::` compression).
        IpAddr::V6(v6) => b.extend_from_slice(v6.to_string().as_bytes()),
    }
}

/// `2026-12-02T06:39:10.931721Z` (UTC, microseconds), as `tracing_subscriber` prints it.
fn push_timestamp(b: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, civil(secs));
        }
        b.extend_from_slice(&c.1);
    });
    b.push(b'.');
    let micros = since.subsec_micros();
    let mut tmp = [b'0'; 6];
    let mut n = micros;
    for d in tmp.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    b.extend_from_slice(&tmp);
    b.push(b'Z');
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
fn push_debug_str(b: &mut Vec<u8>, s: &str) {
    b.push(b'"');
    for c in s.chars() {
        match c {
            '"' => b.extend_from_slice(b"\\\""),
            '\\' => b.extend_from_slice(b"\\\\"),
            '\n' => b.extend_from_slice(b"\\n"),
            '\r' => b.extend_from_slice(b"\\r"),
            '\t' => b.extend_from_slice(b"\\t"),
            c if c.is_control() => b.extend_from_slice(c.escape_debug().to_string().as_bytes()),
            c => {
                let mut u = [0u8; 4];
                b.extend_from_slice(c.encode_utf8(&mut u).as_bytes());
            }
        }
    }
    b.push(b'"');
}

/// A JSON string (RFC 8259 escapes).
fn push_json_str(b: &mut Vec<u8>, s: &str) {
    b.push(b'"');
    for c in s.chars() {
        match c {
            '"' => b.extend_from_slice(b"\\\""),
            '\\' => b.extend_from_slice(b"\\\\"),
            '\n' => b.extend_from_slice(b"\\n"),
            '\r' => b.extend_from_slice(b"\\r"),
            '\t' => b.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let n = c as u32;
                b.extend_from_slice(b"\\u00");
                b.push(HEX[(n >> 4) as usize]);
                b.push(HEX[(n & 0xf) as usize]);
            }
            c => {
                let mut u = [0u8; 4];
                b.extend_from_slice(c.encode_utf8(&mut u).as_bytes());
            }
        }
    }
    b.push(b'"');
}

/// `<time>  INFO portcullis::access: request method=GET path="/" status=200 peer=… ms=… request_id="…"`
fn write_text(b: &mut Vec<u8>, now: SystemTime, e: &Entry<'_>) {
    push_timestamp(b, now);
    b.extend_from_slice(b"  INFO portcullis::access: request method=");
    b.extend_from_slice(e.method.as_bytes());
    b.extend_from_slice(b" path=");
    push_debug_str(b, e.path);
    b.extend_from_slice(b" status=");
    push_u64(b, u64::from(e.status));
    b.extend_from_slice(b" peer=");
    push_ip(b, e.peer);
    b.extend_from_slice(b" ms=");
    push_millis(b, e.elapsed);
    b.extend_from_slice(b" request_id=");
    push_debug_str(b, e.request_id);
    b.push(b'\n');
}

/// The same line as `tracing_subscriber`'s JSON format writes it.
fn write_json(b: &mut Vec<u8>, now: SystemTime, e: &Entry<'_>) {
    b.extend_from_slice(b"{\"timestamp\":\"");
    push_timestamp(b, now);
    b.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":");
    push_json_str(b, e.method);
    b.extend_from_slice(b",\"path\":");
    push_json_str(b, e.path);
    b.extend_from_slice(b",\"status\":");
    push_u64(b, u64::from(e.status));
    b.extend_from_slice(b",\"peer\":\"");
    push_ip(b, e.peer);
    b.extend_from_slice(b"\",\"ms\":\"");
    push_millis(b, e.elapsed);
    b.extend_from_slice(b"\",\"request_id\":");
    push_json_str(b, e.request_id);
    b.extend_from_slice(b"},\"target\":\"portcullis::access\"}\n");
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
        let mut b = Vec::new();
        // 2026-12-02T06:39:10.931721Z
        write_text(
            &mut b,
            at(1_796_193_550, 931_721),
            &entry("/.auth/api/verify", "77c5f30000000001"),
        );
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "2026-12-02T06:39:10.931721Z  INFO portcullis::access: request method=POST \
             path=\"/.auth/api/verify\" status=400 peer=127.0.0.1 ms=0.22 \
             request_id=\"77c5f30000000001\"\n"
        );
    }

    #[test]
    fn json_line_matches_tracing_subscribers_shape_and_parses() {
        let mut b = Vec::new();
        write_json(&mut b, at(1_796_193_550, 5), &entry("/a%22b\\c\"\n", "x"));
        let text = String::from_utf8(b).unwrap();
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
            let mut b = Vec::new();
            push_debug_str(&mut b, s);
            assert_eq!(String::from_utf8(b).unwrap(), format!("{s:?}"), "{s:?}");
        }
    }

    #[test]
    fn json_strings_round_trip_for_every_control_character() {
        let s: String = (0u8..0x80).map(char::from).collect();
        let mut b = Vec::new();
        push_json_str(&mut b, &s);
        let back: String = serde_json::from_slice(&b).unwrap();
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

    #[test]
    fn ipv6_peers_are_printed_as_std_does() {
        let mut b = Vec::new();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        push_ip(&mut b, ip);
        assert_eq!(b, ip.to_string().as_bytes());
        let mut b = Vec::new();
        let ip: IpAddr = "10.200.3.45".parse().unwrap();
        push_ip(&mut b, ip);
        assert_eq!(b, b"10.200.3.45");
    }
}
