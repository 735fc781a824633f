//! Test harness: a real gateway on loopback (temp data_dir, manual clock), a real SMTP server
//! (mailin-embedded), a real echo upstream (hyper + WebSocket), an HTTP client with a cookie jar
//! and raw-socket helpers.

pub mod h2raw;
pub mod mail;
pub mod process;
pub mod proxies;
pub mod redis;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis::{AppState, Clock, ManualClock, SystemClock};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use mail::{Mail, Smtp};
pub use upstream::Upstream;

/// Generous timeout for anything that should "just happen" (a mail, a response) on a busy machine.
pub const WAIT: Duration = Duration::from_secs(30);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// Turns on gateway logs for a test run: `PORTCULLIS_TEST_LOG=debug cargo test --test it`.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sets `value` at a dotted path (`login.rate_limit.per_ip_per_minute`), creating maps on the way.
pub fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let map = cur.as_object_mut().unwrap();
        if i == parts.len() - 1 {
            map.insert((*p).to_string(), value);
            return;
        }
        cur = map.entry((*p).to_string()).or_insert_with(|| json!({}));
    }
}

/// Builds a [`TestGateway`]. Defaults: builtin whoami upstream, `example.com` plus one
/// individual address allowed, no resend cooldown, rate limits out of the way, a fresh SMTP server.
pub struct GatewayBuilder {
    cfg: Value,
    system_clock: bool,
    public_https: bool,
    smtp_port: Option<u16>,
    echo: bool,
    metrics: bool,
    config_file: bool,
    public_url: Option<String>,
}

impl GatewayBuilder {
    /// Sets one configuration key (dotted path) to a JSON/YAML value.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        set_path(&mut self.cfg, path, value.into());
        self
    }

    /// Puts the echo upstream (started with the gateway) behind the gateway.
    pub fn echo_upstream(mut self) -> Self {
        self.echo = true;
        self
    }

    /// Points SMTP at `port` without starting a server there (mail stays queued).
    pub fn smtp_port(mut self, port: u16) -> Self {
        self.smtp_port = Some(port);
        self
    }

    /// Declares an `https://` public_url (the test still talks plain HTTP to the listener,
    /// as behind a TLS-terminating proxy).
    pub fn public_https(mut self) -> Self {
        self.public_https = true;
        self
    }

    /// Uses the wall clock instead of the manual one (outbox backoff needs real time).
    pub fn system_clock(mut self) -> Self {
        self.system_clock = true;
        self
    }

    /// Also serves Prometheus metrics on a loopback port ([`TestGateway::metrics_port`]).
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Writes the configuration to `{dir}/portcullis.yaml` and loads it from there, so the
    /// gateway's reloader (SIGHUP or file change) can re-read it ([`TestGateway::write_config`]).
    pub fn config_file(mut self) -> Self {
        self.config_file = true;
        self
    }

    /// Uses this public_url instead of the listener's own address (a proxy in front).
    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.to_string());
        self
    }

    pub async fn start(self) -> TestGateway {
        init_tracing();
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let (smtp, smtp_port) = match self.smtp_port {
            Some(p) => (None, p),
            None => {
                let s = Smtp::start();
                let p = s.port;
                (Some(Arc::new(s)), p)
            }
        };
        let mut cfg = self.cfg;
        let upstream = if self.echo {
            let u = Upstream::start().await;
            set_path(&mut cfg, "upstream", json!(u.url.clone()));
            Some(Arc::new(u))
        } else {
            None
        };
        set_path(
            &mut cfg,
            "email",
            json!({
                "from": "Portcullis <auth@example.com>",
                "transport": "smtp",
                "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "timeout": "5s"},
            }),
        );
        set_path(
            &mut cfg,
            "data_dir",
            json!(dir.path().display().to_string()),
        );
        let clock = ManualClock::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut gw = TestGateway {
            port: listener.local_addr().unwrap().port(),
            base: String::new(),
            state: None,
            clock,
            system_clock: self.system_clock,
            public_https: self.public_https,
            public_url: self.public_url,
            metrics_port: None,
            config_path: self.config_file.then(|| dir.path().join("portcullis.yaml")),
            want_metrics: self.metrics,
            dir,
            smtp,
            upstream,
            cfg,
            shutdown: None,
            task: None,
        };
        gw.launch(listener).await;
        gw
    }
}

/// A running gateway and everything around it.
pub struct TestGateway {
    pub port: u16,
    /// `http://127.0.0.1:{port}`: the public_url without its trailing slash.
    pub base: String,
    state: Option<Arc<AppState>>,
    pub clock: ManualClock,
    system_clock: bool,
    public_https: bool,
    public_url: Option<String>,
    /// The Prometheus listener's port (with [`GatewayBuilder::metrics`]).
    pub metrics_port: Option<u16>,
    /// Where the configuration is written (with [`GatewayBuilder::config_file`]).
    pub config_path: Option<PathBuf>,
    want_metrics: bool,
    pub dir: Arc<tempfile::TempDir>,
    pub smtp: Option<Arc<Smtp>>,
    pub upstream: Option<Arc<Upstream>>,
    pub cfg: Value,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl TestGateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            cfg: json!({
                "upstream": "builtin:whoami",
                "access": {
                    "allowed_domains": ["example.com"],
                    "allowed_emails": ["guest@partner.org"],
                },
                "login": {
                    "resend_cooldown": "0s",
                    "rate_limit": {"per_ip_per_minute": 1000, "per_email_per_hour": 1000, "per_email_burst": 1000},
                },
                "limits": {"upstream_timeout": "10s", "shutdown_grace": "2s"},
                "log_emails": true,
            }),
            system_clock: false,
            public_https: false,
            smtp_port: None,
            echo: false,
            metrics: false,
            config_file: false,
            public_url: None,
        }
    }

    /// A gateway with the default configuration.
    pub async fn start() -> TestGateway {
        Self::builder().start().await
    }

    /// The YAML text the gateway is started with.
    pub fn yaml(&self) -> String {
        serde_yaml::to_string(&self.cfg).unwrap()
    }

    async fn launch(&mut self, listener: tokio::net::TcpListener) {
        self.port = listener.local_addr().unwrap().port();
        self.base = format!("http://127.0.0.1:{}", self.port);
        set_path(
            &mut self.cfg,
            "listen",
            json!(format!("127.0.0.1:{}", self.port)),
        );
        let scheme = if self.public_https { "https" } else { "http" };
        let public_url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://127.0.0.1:{}", self.port));
        set_path(&mut self.cfg, "public_url", json!(public_url));
        let metrics = if self.want_metrics {
            let l = match self.metrics_port {
                Some(p) => rebind(p).await,
                None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            };
            let port = l.local_addr().unwrap().port();
            self.metrics_port = Some(port);
            set_path(
                &mut self.cfg,
                "metrics_listen",
                json!(format!("127.0.0.1:{port}")),
            );
            Some(l)
        } else {
            None
        };
        let yaml = self.yaml();
        let cfg = match &self.config_path {
            Some(p) => {
                std::fs::write(p, &yaml).unwrap();
                portcullis::Config::load(p)
            }
            None => portcullis::Config::parse(&yaml, Path::new("test.yaml")),
        }
        .unwrap_or_else(|e| panic!("test config rejected: {e}\n{yaml}"));
        let clock: Arc<dyn Clock> = if self.system_clock {
            Arc::new(SystemClock)
        } else {
            Arc::new(self.clock.clone())
        };
        // The previous instance may still be letting go of the sled lock: retry for a while.
        let mut listener = Some(listener);
        let mut metrics = metrics;
        let deadline = tokio::time::Instant::now() + WAIT;
        let app = loop {
            let l = listener.take().unwrap();
            match portcullis::App::with_listeners(
                cfg.clone(),
                clock.clone(),
                portcullis::Listeners {
                    http: l,
                    tls: None,
                    metrics: metrics.take(),
                },
            )
            .await
            {
                Ok(app) => break app,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "gateway did not start: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    listener = Some(rebind(self.port).await);
                    if let Some(p) = self.metrics_port {
                        metrics = Some(rebind(p).await);
                    }
                }
            }
        };
        self.state = Some(app.state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        self.shutdown = Some(tx);
        self.task = Some(tokio::spawn(async move {
            app.run(async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| e.to_string())
        }));
    }

    /// The gateway's shared state (store, metrics, config).
    pub fn state(&self) -> &Arc<AppState> {
        self.state.as_ref().expect("gateway is stopped")
    }

    /// Stops the gateway (graceful shutdown) and waits for it to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let r = tokio::time::timeout(WAIT, task)
                .await
                .expect("gateway did not stop in time")
                .expect("gateway task panicked");
            r.expect("gateway run returned an error");
        }
        self.state = None;
    }

    /// Stops the gateway and starts it again on the same port and data_dir, after `change`
    /// edits the configuration.
    pub async fn restart_with(&mut self, change: impl FnOnce(&mut Value)) {
        self.stop().await;
        change(&mut self.cfg);
        let l = rebind(self.port).await;
        self.launch(l).await;
    }

    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// Edits the configuration and writes it to the config file of a running gateway (needs
    /// [`GatewayBuilder::config_file`]); the gateway's reloader picks it up (or send SIGHUP).
    pub fn write_config(&mut self, change: impl FnOnce(&mut Value)) {
        change(&mut self.cfg);
        let path = self
            .config_path
            .clone()
            .expect("write_config needs GatewayBuilder::config_file");
        std::fs::write(path, self.yaml()).unwrap();
    }

    /// The Prometheus text of the metrics listener (needs [`GatewayBuilder::metrics`]).
    pub async fn metrics_text(&self) -> String {
        let port = self
            .metrics_port
            .expect("this gateway has no metrics listener");
        let r = Http::new(&format!("http://127.0.0.1:{port}"))
            .send(Req::get("/metrics"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.text()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A new client (own cookie jar) aimed at this gateway.
    pub fn http(&self) -> Http {
        Http::new(&self.base)
    }

    pub fn smtp(&self) -> &Smtp {
        self.smtp.as_ref().expect("this gateway has no SMTP server")
    }

    pub fn upstream(&self) -> &Upstream {
        self.upstream
            .as_ref()
            .expect("this gateway has no echo upstream")
    }

    /// The next mail to `to` (waits for it).
    pub async fn mail(&self, to: &str) -> Mail {
        self.smtp().wait_for_mail(to, WAIT).await
    }

    /// `POST /.auth/api/login`, asserting 200; returns the JSON.
    pub async fn api_login(&self, email: &str) -> Value {
        let r = self
            .http()
            .send(Req::post("/.auth/api/login").json(&json!({ "email": email })))
            .await;
        assert_eq!(r.status, StatusCode::OK, "api/login {email}: {}", r.text());
        r.json()
    }

    /// Signs `email` in through the JSON API (code) and returns the session token.
    pub async fn sign_in(&self, email: &str) -> String {
        let c = self.api_login(email).await;
        let mail = self.mail(email).await;
        let r = self
            .http()
            .send(Req::post("/.auth/api/verify").json(&json!({
                "challenge_id": c["challenge_id"],
                "code": mail.code(),
                "issue_token": true,
            })))
            .await;
        assert_eq!(r.status, StatusCode::OK, "api/verify: {}", r.text());
        r.json()["session_token"].as_str().unwrap().to_string()
    }

    /// Signs in through the HTML pages (form, mailed code) and returns the browser with its cookie.
    pub async fn browser_sign_in(&self, email: &str) -> Http {
        let b = self.http();
        let r = b
            .send(Req::post("/.auth/login").form(&[("email", email), ("rd", "/")]))
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "login form: {}", r.text());
        assert_eq!(r.location(), "/.auth/check-email");
        let code = self.mail(email).await.code();
        let r = b
            .send(Req::post("/.auth/code").form(&[("code", &code)]))
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "code form: {}", r.text());
        assert!(b.cookie("portcullis_session").is_some());
        b
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn rebind(port: u16) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot rebind {port}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// One request to send.
pub struct Req {
    method: Method,
    target: String,
    headers: Vec<(String, String)>,
    body: ReqBody,
}

fn full_body(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

impl Req {
    pub fn new(method: Method, target: &str) -> Req {
        Req {
            method,
            target: target.to_string(),
            headers: Vec::new(),
            body: full_body(Bytes::new()),
        }
    }
    pub fn get(target: &str) -> Req {
        Req::new(Method::GET, target)
    }
    pub fn post(target: &str) -> Req {
        Req::new(Method::POST, target)
    }
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// A browser's top-level navigation.
    pub fn navigate(self) -> Req {
        self.header("sec-fetch-mode", "navigate")
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
    }
    pub fn body(mut self, b: impl Into<Bytes>) -> Req {
        self.body = full_body(b);
        self
    }
    pub fn stream(mut self, b: ReqBody) -> Req {
        self.body = b;
        self
    }
    pub fn form(self, fields: &[(&str, &str)]) -> Req {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
    pub fn json(self, v: &Value) -> Req {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
}

/// A response with its whole body read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} body {}",
                self.status,
                self.text()
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
    pub fn location(&self) -> String {
        self.header("location")
            .unwrap_or_else(|| panic!("no Location (status {}): {}", self.status, self.text()))
    }
    /// Every `Set-Cookie` of this response, parsed.
    pub fn set_cookies(&self) -> Vec<cookie::Cookie<'static>> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|s| cookie::Cookie::parse(s.to_string()).ok())
            .collect()
    }
    pub fn set_cookie(&self, name: &str) -> Option<cookie::Cookie<'static>> {
        self.set_cookies().into_iter().find(|c| c.name() == name)
    }
    /// The JSON API's error shape: `{"error": "...", "code": "..."}`; returns the code.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(v["error"].is_string(), "no error message: {v}");
        v["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code: {v}"))
            .to_string()
    }
}

#[derive(Debug, Clone)]
struct JarCookie {
    value: String,
    path: String,
}

/// A small HTTP/1.1 client with a cookie jar (one host, path-scoped, honours removals).
#[derive(Clone)]
pub struct Http {
    base: String,
    client: Client<HttpConnector, ReqBody>,
    jar: Arc<Mutex<HashMap<String, JarCookie>>>,
}

impl Http {
    pub fn new(base: &str) -> Http {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        Http {
            base: base.to_string(),
            client,
            jar: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).map(|c| c.value.clone())
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.lock().unwrap().insert(
            name.to_string(),
            JarCookie {
                value: value.to_string(),
                path: "/".into(),
            },
        );
    }

    fn cookie_header(&self, path: &str) -> Option<String> {
        let jar = self.jar.lock().unwrap();
        let mut pairs: Vec<String> = jar
            .iter()
            .filter(|(_, c)| path.starts_with(&c.path))
            .map(|(n, c)| format!("{n}={}", c.value))
            .collect();
        pairs.sort();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn absorb(&self, headers: &HeaderMap) {
        let mut jar = self.jar.lock().unwrap();
        for v in headers.get_all("set-cookie") {
            let Ok(c) = cookie::Cookie::parse(v.to_str().unwrap_or("").to_string()) else {
                continue;
            };
            let removed =
                c.value().is_empty() || c.max_age().is_some_and(|a| a.is_zero() || a.is_negative());
            if removed {
                jar.remove(c.name());
            } else {
                jar.insert(
                    c.name().to_string(),
                    JarCookie {
                        value: c.value().to_string(),
                        path: c.path().unwrap_or("/").to_string(),
                    },
                );
            }
        }
    }

    /// Follows a `303`/`302` answer: GETs its `Location` (relative or absolute) with this jar.
    pub async fn follow(&self, r: &Resp) -> Resp {
        assert!(
            r.status.is_redirection(),
            "not a redirect ({}): {}",
            r.status,
            r.text()
        );
        self.send(Req::get(&r.location())).await
    }

    /// Sends a request and reads the whole response (fails the test after [`WAIT`]).
    pub async fn send(&self, req: Req) -> Resp {
        tokio::time::timeout(WAIT, self.try_send(req))
            .await
            .expect("request timed out")
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    pub async fn try_send(&self, req: Req) -> Result<Resp, BoxError> {
        let uri = if req.target.starts_with("http://") {
            req.target.clone()
        } else {
            format!("{}{}", self.base, req.target)
        };
        let path = url::Url::parse(&uri)?.path().to_string();
        let mut b = Request::builder().method(req.method).uri(&uri);
        let explicit_cookie = req
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("cookie"));
        for (n, v) in &req.headers {
            b = b.header(n.as_str(), v.as_str());
        }
        if !explicit_cookie {
            if let Some(c) = self.cookie_header(&path) {
                b = b.header("cookie", c);
            }
        }
        let resp = self.client.request(b.body(req.body)?).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        self.absorb(&parts.headers);
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// A request body fed by the test, chunk by chunk.
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn pair() -> (tokio::sync::mpsc::Sender<Bytes>, ReqBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (tx, ChannelBody { rx }.boxed())
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

// ---------------------------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------------------------

/// Writes `request` as is and reads until the server closes the connection (or [`WAIT`]).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, read_to_close(&mut s, &mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_to_close(s: &mut TcpStream, out: &mut Vec<u8>) {
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status code of a raw HTTP/1.1 response text.
pub fn raw_status(resp: &str) -> Option<u16> {
    resp.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Keys of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// Percent-encodes a string for a query component.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Undoes the HTML escaping of the page templates (minijinja also escapes `/`).
pub fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of one sample (`name` or `name{labels}`, exactly as exposed) of a Prometheus text.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == sample).then(|| v.parse().ok())?
    })
}

/// Signs `email` in through the JSON API of the gateway at `base` (code from `smtp`); returns the
/// session token.
pub async fn api_sign_in(base: &str, smtp: &Smtp, email: &str) -> String {
    let http = Http::new(base);
    let r = http
        .send(Req::post("/.auth/api/login").json(&json!({ "email": email })))
        .await;
    assert_eq!(r.status, StatusCode::OK, "api/login {email}: {}", r.text());
    let id = r.json()["challenge_id"].clone();
    let code = smtp.wait_for_mail(email, WAIT).await.code();
    let r = http
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": id, "code": code, "issue_token": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "api/verify: {}", r.text());
    r.json()["session_token"].as_str().unwrap().to_string()
}

/// Polls `probe` every 100 ms until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} (waited {timeout:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Skips the calling test with a visible `SKIPPED <test>: <why>` line on stderr, unless
/// `PORTCULLIS_REQUIRE_SYSTEM_SERVERS=1` (set by `.ci/run`) makes skipping a failure.
pub fn skip(why: &str) {
    use std::io::Write as _;
    if std::env::var("PORTCULLIS_REQUIRE_SYSTEM_SERVERS").as_deref() == Ok("1") {
        panic!("{why}; PORTCULLIS_REQUIRE_SYSTEM_SERVERS=1 forbids skipping");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!`.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// The installed system binary `name` (looked for in `usual`, then on `PATH`). When it is
/// missing the calling test is skipped ([`skip`], naming `packages` to install) and `None`.
pub fn system_binary(name: &str, usual: &[&str], packages: &str) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = usual.iter().map(PathBuf::from).collect();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        skip(&format!(
            "{name} not installed (apt-get install {packages}, or run .ci/run to run everything)"
        ));
    }
    found
}
