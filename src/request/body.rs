//! The body of a client's request: hyper's stream (HTTP/1 with a body), the gateway's own
//! HTTP/2 server's, or none (a request without a body).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client request's body.
#[derive(Debug)]
pub enum ClientBody {
    /// Read by hyper (HTTP/1 bodies, upgrades, anything the own loop hands over).
    Hyper(Incoming),
    /// DATA frames of an HTTP/2 stream.
    H2(crate::request::streamed::InboundBody),
    /// No body: neither `Content-Length` nor `Transfer-Encoding` was sent (HTTP/1), or the
    /// request's HEADERS ended the stream (HTTP/2).
    Empty,
}

/// Moves the request out of `req`, leaving a bodyless `GET /` in its place (nothing is
/// allocated). For the layers that borrow a request and the few paths that need it whole.
pub fn take_request(req: &mut http::Request<ClientBody>) -> http::Request<ClientBody> {
    std::mem::replace(req, http::Request::new(ClientBody::Empty))
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}
