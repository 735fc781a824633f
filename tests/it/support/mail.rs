//! A real SMTP server (mailin-embedded) that keeps every message, and a small MIME reader.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use mailin_embedded::response::OK;
use mailin_embedded::{Handler, Response, Server, SslConfig};

/// One received message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// RCPT TO addresses as the client sent them.
    pub rcpt: Vec<String>,
    pub from: String,
    /// The whole DATA section.
    pub raw: String,
}

#[derive(Clone)]
struct Collect {
    store: Arc<Mutex<Vec<Mail>>>,
    rcpt: Vec<String>,
    from: String,
    data: Vec<u8>,
}

impl Handler for Collect {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_string();
        self.rcpt.clear();
        OK
    }
    fn rcpt(&mut self, to: &str) -> Response {
        self.rcpt.push(to.to_string());
        OK
    }
    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.data.clear();
        OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }
    fn data_end(&mut self) -> Response {
        let mail = Mail {
            rcpt: std::mem::take(&mut self.rcpt),
            from: self.from.clone(),
            raw: String::from_utf8_lossy(&self.data).into_owned(),
        };
        self.store.lock().unwrap().push(mail);
        OK
    }
}

/// The SMTP server of a test. It runs on its own threads until the test process ends.
pub struct Smtp {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    taken: Mutex<HashMap<String, usize>>,
}

impl Smtp {
    /// Starts a server on a fresh port.
    pub fn start() -> Smtp {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(l)
    }

    /// Starts a server on `port` (which must be free now).
    pub fn start_on(port: u16) -> Smtp {
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        Self::serve(l)
    }

    fn serve(l: std::net::TcpListener) -> Smtp {
        let port = l.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let handler = Collect {
            store: mails.clone(),
            rcpt: Vec::new(),
            from: String::new(),
            data: Vec::new(),
        };
        let mut server = Server::new(handler);
        server
            .with_name("smtp.test")
            .with_ssl(SslConfig::None)
            .unwrap()
            .with_num_threads(8)
            .with_tcp_listener(l);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Smtp {
            port,
            mails,
            taken: Mutex::new(HashMap::new()),
        }
    }

    /// Every mail received so far.
    pub fn all(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Mails whose envelope recipient is `to` (compared exactly).
    pub fn mails_to(&self, to: &str) -> Vec<Mail> {
        self.all()
            .into_iter()
            .filter(|m| m.rcpt.iter().any(|r| r.trim_matches(['<', '>']) == to))
            .collect()
    }

    /// The next mail to `to` not returned before; panics after `timeout`.
    pub async fn wait_for_mail(&self, to: &str, timeout: Duration) -> Mail {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = self.mails_to(to);
            {
                let mut taken = self.taken.lock().unwrap();
                let n = taken.entry(to.to_string()).or_insert(0);
                if seen.len() > *n {
                    *n += 1;
                    return seen[*n - 1].clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no mail to {to} within {timeout:?}; got mail for {:?}",
                self.all()
                    .iter()
                    .map(|m| m.rcpt.clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Header lines (unfolded) and body of one MIME entity.
fn split_entity(raw: &str) -> (Vec<(String, String)>, String) {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Decodes quoted-printable: soft line breaks (`=` at end of line) and `=XX` escapes.
pub fn decode_qp(s: &str) -> String {
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode_body(headers: &[(String, String)], body: &str) -> String {
    match header(headers, "content-transfer-encoding")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("quoted-printable") => decode_qp(body),
        Some("base64") => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => body.to_string(),
    }
}

/// The leaf parts of a message: (content type, decoded body).
fn leaves(raw: &str) -> Vec<(String, String)> {
    let (headers, body) = split_entity(raw);
    let ctype = header(&headers, "content-type")
        .unwrap_or("text/plain")
        .to_string();
    if ctype.to_ascii_lowercase().starts_with("multipart/") {
        let boundary = ctype
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("boundary="))
            .next()
            .map(|b| b.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("multipart without boundary: {ctype}"));
        let delim = format!("--{boundary}");
        body.split(&delim)
            .skip(1)
            .take_while(|p| !p.starts_with("--"))
            .flat_map(|p| leaves(p.trim_start_matches(['\r', '\n'])))
            .collect()
    } else {
        vec![(ctype.to_ascii_lowercase(), decode_body(&headers, &body))]
    }
}

impl Mail {
    /// A top-level header of the message.
    pub fn header(&self, name: &str) -> Option<String> {
        let (h, _) = split_entity(&self.raw);
        header(&h, &name.to_ascii_lowercase()).map(str::to_string)
    }

    /// The decoded text/plain part.
    pub fn text(&self) -> String {
        leaves(&self.raw)
            .into_iter()
            .find(|(t, _)| t.starts_with("text/plain"))
            .map(|(_, b)| b)
            .unwrap_or_else(|| panic!("no text/plain part in\n{}", self.raw))
    }

    /// The decoded text/html part.
    pub fn html(&self) -> String {
        leaves(&self.raw)
            .into_iter()
            .find(|(t, _)| t.starts_with("text/html"))
            .map(|(_, b)| b)
            .unwrap_or_else(|| panic!("no text/html part in\n{}", self.raw))
    }

    /// The sign-in link of the text part, if any.
    pub fn link_opt(&self) -> Option<String> {
        let text = self.text();
        let start = text.find("http")?;
        let rest = &text[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let link = &rest[..end];
        link.contains("/.auth/verify?token=")
            .then(|| link.to_string())
    }

    /// The sign-in link (absolute URL).
    pub fn link(&self) -> String {
        self.link_opt()
            .unwrap_or_else(|| panic!("no sign-in link in\n{}", self.text()))
    }

    /// The link's token.
    pub fn token(&self) -> String {
        let link = self.link();
        let (_, t) = link.split_once("token=").unwrap();
        t.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }

    /// The one-time code of the text part, if any (a line of 4 to 10 digits).
    pub fn code_opt(&self) -> Option<String> {
        self.text()
            .lines()
            .map(str::trim)
            .find(|l| (4..=10).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
    }

    pub fn code(&self) -> String {
        self.code_opt()
            .unwrap_or_else(|| panic!("no code in\n{}", self.text()))
    }
}
