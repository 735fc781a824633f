//! The gateway's side of an upstream connection: the request and answer body types, a downstream connection's own kept upstream connections, and why an exchange failed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::request::ClientBody;
use hyper_util::rt::TokioIo;

use crate::proxy::wire;

/// An answer body streamed from the upstream: through hyper's client, or the gateway's own.
pub type UpstreamBody = http_body_util::Either<Incoming, wire::WireBody>;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{0}")]
    Pooled(#[from] hyper_util::client::legacy::Error),
    #[error("{0}")]
    Own(#[from] hyper::Error),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Wire(#[from] wire::WireError),
}

/// A downstream connection's own HTTP/1.1 connections to the upstream, kept between requests:
/// one driven by the gateway's own client (bodyless requests, [`wire`]) and one by hyper's
/// (requests with a body).
#[derive(Default)]
pub struct UpstreamSlot {
    hyper: std::sync::Mutex<Option<(String, hyper::client::conn::http1::SendRequest<ForwardBody>)>>,
    /// The kept connection of the gateway's own client (shared with the answer body that
    /// returns it when it has been read to its end).
    pub wire: wire::Slot,
}

impl std::fmt::Debug for UpstreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamSlot")
    }
}

impl UpstreamSlot {
    fn take(
        &self,
        authority: &str,
    ) -> Option<hyper::client::conn::http1::SendRequest<ForwardBody>> {
        let mut g = self.hyper.lock().unwrap_or_else(|p| p.into_inner());
        match g.take() {
            Some((a, s)) if a == authority && !s.is_closed() => Some(s),
            _ => None,
        }
    }

    fn put(&self, authority: &str, sender: hyper::client::conn::http1::SendRequest<ForwardBody>) {
        let mut g = self.hyper.lock().unwrap_or_else(|p| p.into_inner());
        *g = Some((authority.to_string(), sender));
    }

    async fn connect(
        authority: &str,
    ) -> Result<hyper::client::conn::http1::SendRequest<ForwardBody>, ForwardError> {
        let stream = wire::connect_tcp(authority)
            .await
            .map_err(ForwardError::Connect)?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends on the kept connection, or a new one when there is none or it has closed. A
    /// request the old connection did not take is retried once on a fresh connection.
    pub async fn send(
        &self,
        authority: &str,
        req: Request<ForwardBody>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let mut req = req;
        for attempt in 0..2 {
            let kept = if attempt == 0 {
                self.take(authority)
            } else {
                None
            };
            let mut sender = match kept {
                Some(s) => s,
                None => Self::connect(authority).await?,
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                        self.put(authority, sender);
                    }
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if attempt == 0 => req = back,
                    _ => return Err(ForwardError::Own(e.into_error())),
                },
            }
        }
        Err(ForwardError::Connect(std::io::Error::other(
            "upstream connection closed",
        )))
    }
}

/// The request body sent upstream: the frame already read, then the rest, streamed.
pub struct ForwardBody {
    first: Option<Frame<Bytes>>,
    rest: ClientBody,
}

impl ForwardBody {
    /// A body whose first frame (if any) was read already.
    pub fn new(first: Option<Frame<Bytes>>, rest: ClientBody) -> ForwardBody {
        ForwardBody { first, rest }
    }
}

impl HttpBody for ForwardBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(f) = this.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let extra = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map_or(0, |d| d.len() as u64);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + extra);
        if let Some(u) = rest.upper() {
            hint.set_upper(u + extra);
        }
        hint
    }
}
