//! The echo upstream: a real hyper server on loopback that answers with what it received,
//! plus a WebSocket echo (`/ws`), a slow endpoint, streaming probes and `/set-cookie`. Every
//! request is recorded with the path a lenient app framework would act on ([`lenient_path`]).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type RespBody = BoxBody<Bytes, Infallible>;

/// A request as the upstream saw it (recorded when its head arrives).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    /// The path a lenient framework acts on for this URI ([`lenient_path`]).
    pub acted: String,
}

impl Seen {
    /// Every value of header `name` (lower case).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether the lenient reading of this request lies under `prefix` (`/admin`).
    pub fn acted_under(&self, prefix: &str) -> bool {
        self.acted == prefix || self.acted.starts_with(&format!("{prefix}/"))
    }
}

/// The path an app acts on when it reads URLs the way Tomcat, Werkzeug and friends do: `\` is `/`,
/// each segment's `;params` are dropped (Tomcat), escapes are decoded, again and again
/// (`%252f` is `/`, `%2F` and `%5C` split segments: Werkzeug), `.`, `..` and empty segments are
/// resolved, and case is folded (case-insensitive routers).
pub fn lenient_path(uri: &str) -> String {
    let raw = uri.split('?').next().unwrap_or("");
    let strip_params = |p: &str| {
        p.split('/')
            .map(|seg| seg.split(';').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut p = strip_params(&raw.replace('\\', "/"));
    for _ in 0..3 {
        let d = percent_encoding::percent_decode_str(&p)
            .decode_utf8_lossy()
            .replace('\\', "/");
        if d == p {
            break;
        }
        p = d;
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/")).to_lowercase()
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    /// Data frames of `/stream-in` as they arrive.
    chunks: Mutex<Vec<Bytes>>,
    /// Lets `/drip` send its second chunk.
    release: Notify,
    /// `/ws` connections the upstream still holds open.
    ws_open: std::sync::atomic::AtomicUsize,
}

pub struct Upstream {
    /// `http://127.0.0.1:{port}`
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let sh = sh.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(sh.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests seen for a path (query ignored).
    pub fn seen_path(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.uri.split('?').next() == Some(path))
            .collect()
    }

    /// Data frames received so far by `/stream-in`.
    pub fn chunks(&self) -> Vec<Bytes> {
        self.shared.chunks.lock().unwrap().clone()
    }

    /// Lets a waiting `/drip` response finish.
    pub fn release(&self) {
        self.shared.release.notify_one();
    }

    /// How many `/ws` connections the upstream still holds open (its side of each).
    pub fn open_websockets(&self) -> usize {
        self.shared
            .ws_open
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).boxed()
}

fn json_resp(status: StatusCode, v: &Value) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream", "echo")
        .body(full(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

/// A response body fed chunk by chunk.
struct Drip {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl Body for Drip {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

async fn handle(
    sh: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let uri = req.uri().to_string();
    let method = req.method().to_string();
    sh.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        uri: uri.clone(),
        headers: headers.clone(),
        acted: lenient_path(&uri),
    });
    let path = req.uri().path().to_string();

    if path == "/ws" {
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            return Ok(json_resp(
                StatusCode::BAD_REQUEST,
                &json!({"error": "not a websocket request"}),
            ));
        };
        let identity = req
            .headers()
            .get("x-forwarded-email")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        let on_upgrade = hyper::upgrade::on(&mut req);
        let sh = sh.clone();
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            sh.ws_open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let _ = ws.send(Message::Text(format!("hello {identity}"))).await;
            while let Some(Ok(msg)) = ws.next().await {
                match msg {
                    Message::Text(t) => {
                        let _ = ws.send(Message::Text(format!("echo: {t}"))).await;
                    }
                    Message::Binary(b) => {
                        let _ = ws.send(Message::Binary(b)).await;
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            drop(ws);
            sh.ws_open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(full(Bytes::new()))
            .unwrap());
    }

    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(120)).await;
        return Ok(json_resp(StatusCode::OK, &json!({"slow": true})));
    }

    if let Some(ms) = path.strip_prefix("/delay/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(json_resp(StatusCode::OK, &json!({"delayed_ms": ms})));
    }

    if path == "/drip" {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let sh2 = sh.clone();
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(b"first chunk\n")).await;
            sh2.release.notified().await;
            let _ = tx.send(Bytes::from_static(b"second chunk\n")).await;
        });
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain")
            .body(Drip { rx }.boxed())
            .unwrap());
    }

    if path == "/stream-in" {
        let mut body = req.into_body();
        let mut total = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        total.extend_from_slice(&d);
                        sh.chunks.lock().unwrap().push(d);
                    }
                }
                Err(e) => {
                    return Ok(json_resp(
                        StatusCode::BAD_REQUEST,
                        &json!({"body_error": e.to_string()}),
                    ));
                }
            }
        }
        return Ok(json_resp(
            StatusCode::OK,
            &json!({"body": String::from_utf8_lossy(&total), "frames": sh.chunks.lock().unwrap().len()}),
        ));
    }

    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        let data: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/octet-stream")
            .body(full(data))
            .unwrap());
    }

    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok());
        let status = status.unwrap_or(StatusCode::OK);
        return Ok(Response::builder()
            .status(status)
            .header("x-upstream-status", code)
            .header("set-cookie", "app_cookie=1; Path=/")
            .header("keep-alive", "timeout=5")
            .header("x-hop-resp", "secret")
            .header("connection", "x-hop-resp")
            .body(full(format!("status {code}")))
            .unwrap());
    }

    // `/set-cookie?c=<Set-Cookie value>&c=…`: answers with each value as a `Set-Cookie`.
    if path == "/set-cookie" {
        let query = req.uri().query().unwrap_or("");
        let mut r = Response::builder()
            .status(StatusCode::OK)
            .header("x-upstream", "echo");
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "c" {
                r = r.header("set-cookie", v.as_ref());
            }
        }
        return Ok(r.body(full("cookies set")).unwrap());
    }

    let (parts, body) = req.into_parts();
    let _ = parts;
    let (body, body_error) = match body.collect().await {
        Ok(c) => (c.to_bytes(), None),
        Err(e) => (Bytes::new(), Some(e.to_string())),
    };
    Ok(json_resp(
        StatusCode::OK,
        &json!({
            "method": method,
            "uri": uri,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "body_len": body.len(),
            "body_error": body_error,
        }),
    ))
}

/// Every value of `name` in an echo response's header list.
pub fn echoed(v: &Value, name: &str) -> Vec<String> {
    v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0].as_str() == Some(name))
        .map(|p| p[1].as_str().unwrap().to_string())
        .collect()
}
