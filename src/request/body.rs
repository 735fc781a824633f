//! The body of a client's request: hyper's stream, or none for a request the gateway's own
//! HTTP/1 loop read (it takes only requests that have no body).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A client request's body.
#[derive(Debug)]
pub enum ClientBody {
    /// Read by hyper (HTTP/2, bodies, upgrades, anything the own loop hands over).
    Hyper(Incoming),
    /// No body: neither `Content-Length` nor `Transfer-Encoding` was sent.
    Empty,
}

/// Moves the request out of `req`, leaving a bodyless `GET /` in its place (nothing is
/// allocated). For the layers that borrow a request and the few paths that need it whole.
pub fn take_request(req: &mut http::Request<ClientBody>) -> http::Request<ClientBody> {
    std::mem::replace(req, http::Request::new(ClientBody::Empty))
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}
