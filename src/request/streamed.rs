//! A request body arriving in HTTP/2 DATA frames: the connection pushes the frames in, the
//! handler reads them out, and what it has read is given back to the client as window.
//!
//! The bytes are copied into one buffer per stream: a slice of the connection's read buffer
//! would keep that whole buffer alive, and a client sending one-byte frames between kilobytes of
//! other frames could pin a read buffer per byte of window.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

/// Why a request body ended early.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum BodyError {
    #[error("the client reset the stream")]
    Reset,
    #[error("the request body does not match its content-length")]
    Length,
    #[error("the connection closed")]
    Closed,
}

/// What the connection and the reader share.
#[derive(Default)]
struct Shared {
    /// Bytes pushed and not yet read out (at most the window the connection grants).
    buf: BytesMut,
    /// END_STREAM came: nothing follows the chunks.
    ended: bool,
    failed: Option<BodyError>,
    /// Bytes read out and not yet given back as window.
    released: usize,
    /// The reader waiting for data.
    reader: Option<Waker>,
    /// The connection's task, woken when bytes are read out (to send WINDOW_UPDATE).
    conn: Option<Waker>,
    /// The reader is gone (dropped): nothing will read the rest.
    abandoned: bool,
}

/// The connection's end.
#[derive(Clone)]
pub struct Inbound(Arc<Mutex<Shared>>);

/// The handler's end: a `hyper::body::Body`.
pub struct InboundBody {
    shared: Arc<Mutex<Shared>>,
    /// The declared content-length, for the size hint.
    length: Option<u64>,
    /// Bytes read out so far.
    taken: u64,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new body channel; `length` is the request's content-length, if it sent one.
pub fn channel(length: Option<u64>) -> (Inbound, InboundBody) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    (
        Inbound(shared.clone()),
        InboundBody {
            shared,
            length,
            taken: 0,
        },
    )
}

impl Inbound {
    /// Hands a DATA frame's bytes to the reader. Returns false when nothing will read them (the
    /// reader is gone); the caller then gives the window back at once.
    pub fn push(&self, data: &[u8], conn: &Waker) -> bool {
        let mut s = lock(&self.0);
        if s.abandoned {
            return false;
        }
        if !s.conn.as_ref().is_some_and(|w| w.will_wake(conn)) {
            s.conn = Some(conn.clone());
        }
        s.buf.extend_from_slice(data);
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        true
    }

    /// END_STREAM: the body is complete.
    pub fn end(&self) {
        let mut s = lock(&self.0);
        s.ended = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// The body ends in an error (a reset stream, a wrong length, a closed connection): what is
    /// buffered is dropped (counted as read, for the window) and the reader gets the error next.
    pub fn fail(&self, why: BodyError) {
        let mut s = lock(&self.0);
        if !s.ended {
            s.failed = Some(why);
            let n = s.buf.len();
            s.released += n;
            s.buf.clear();
        }
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// Bytes read out since the last call (to be given back to the client as window), and
    /// bytes never to be read (a reader gone) are counted too.
    pub fn take_released(&self) -> usize {
        let mut s = lock(&self.0);
        let mut n = std::mem::take(&mut s.released);
        if s.abandoned {
            n += s.buf.len();
            s.buf = BytesMut::new();
        }
        n
    }

    /// Bytes pushed and not yet read out.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        lock(&self.0).buf.len()
    }
}

impl Body for InboundBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut s = lock(&this.shared);
        if !s.buf.is_empty() {
            let c = s.buf.split().freeze();
            s.released += c.len();
            this.taken += c.len() as u64;
            if let Some(w) = &s.conn {
                w.wake_by_ref();
            }
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        if let Some(e) = s.failed {
            return Poll::Ready(Some(Err(e)));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        if !s.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.shared);
        s.ended && s.buf.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            // What is still to come.
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.taken)),
            None => SizeHint::default(),
        }
    }
}

impl Drop for InboundBody {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        s.abandoned = true;
        s.reader = None;
        if let Some(w) = &s.conn {
            w.wake_by_ref();
        }
    }
}

impl std::fmt::Debug for InboundBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundBody")
            .field("length", &self.length)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn data_flows_and_reads_are_released() {
        let (tx, mut rx) = channel(Some(6));
        let w = futures_util::task::noop_waker();
        assert_eq!(rx.size_hint().exact(), Some(6));
        assert!(tx.push(b"abc", &w));
        let got = rx.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&got[..], b"abc");
        assert_eq!(rx.size_hint().exact(), Some(3));
        assert!(tx.push(b"de", &w));
        assert!(tx.push(b"f", &w));
        tx.end();
        assert_eq!(tx.take_released(), 3);
        assert_eq!(tx.buffered(), 3);
        let all = rx.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"def");
        assert_eq!(tx.take_released(), 3);
    }

    #[tokio::test]
    async fn a_failure_reaches_the_reader_before_what_was_buffered() {
        let (tx, mut rx) = channel(None);
        let w = futures_util::task::noop_waker();
        assert!(tx.push(b"abc", &w));
        tx.fail(BodyError::Reset);
        assert!(matches!(rx.frame().await, Some(Err(BodyError::Reset))));
        assert_eq!(tx.take_released(), 3);
        assert_eq!(tx.buffered(), 0);
    }

    #[test]
    fn a_dropped_reader_gives_everything_back() {
        let (tx, rx) = channel(None);
        let w = futures_util::task::noop_waker();
        assert!(tx.push(b"abcd", &w));
        drop(rx);
        assert_eq!(tx.take_released(), 4);
        assert!(!tx.push(b"x", &w));
    }
}
