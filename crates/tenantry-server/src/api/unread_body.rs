//! A response to a request whose body was not read to its end closes the
//! connection, and says so.
//!
//! Some answers come before the body is read: 413 for a body over the
//! limit, 408 for one sent too slowly, an upload refused by its handler
//! before it streams (401, 403, 429). hyper cannot reuse such a connection
//! (the unread bytes sit where the next request should start), and when it
//! notices only after the response head is out, it closes without a
//! `Connection: close` header: the client reuses the connection for its
//! next request and sees "server disconnected" instead of an answer.
//!
//! So every HTTP/1 request's body is watched from the moment hyper hands it
//! over. If the router answered without reading it to the end, the response
//! gets `Connection: close`, and the rest of the body is read and thrown
//! away (for a bounded time and size) while the response goes out: closing
//! a socket with unread data resets it, and a reset can destroy the answer
//! before the client has read it.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, Version, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long, and how much, the rest of a refused body is read after the
/// answer: enough for a client that had already sent it, not enough to
/// hold a connection for a client that keeps sending.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// The request with its body watched, and what tells the response whether
/// the body was read.
pub fn watch(req: Request<Incoming>) -> (Request<Body>, Unread) {
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let http1 = req.version() <= Version::HTTP_11;
    let (tx, rx) = oneshot::channel();
    let req = req.map(|body| {
        Body::new(Watched {
            body: Some(body),
            rest: Some(tx),
        })
    });
    (
        req,
        Unread {
            rest: rx,
            http1,
            expects_continue,
        },
    )
}

/// The other end of a watched body: holds what was left of it once the
/// router let it go.
pub struct Unread {
    rest: oneshot::Receiver<Incoming>,
    http1: bool,
    expects_continue: bool,
}

impl Unread {
    /// Marks `res` as closing the connection if the request's body was
    /// dropped unread, and drains that rest in the background.
    pub fn settle<B>(mut self, res: &mut Response<B>) {
        // Nothing came back: the body was read to its end, or a task still
        // holds it and reads on (hyper keeps the connection's state right
        // for both).
        let Ok(rest) = self.rest.try_recv() else {
            return;
        };
        if !self.http1 {
            // HTTP/2 resets just the stream; the connection is not at stake.
            return;
        }
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        // A client waiting for `100 Continue` has not sent the body: asking
        // for it now only to throw it away would waste its upload.
        if !self.expects_continue {
            tokio::spawn(drain(rest));
        }
    }
}

/// Reads and discards what is left of a body, within `LINGER` and
/// `LINGER_BYTES`; hyper closes the connection once it is dropped.
async fn drain(mut rest: Incoming) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(LINGER, async {
        let mut read = 0usize;
        while read < LINGER_BYTES {
            match rest.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                _ => break,
            }
        }
    })
    .await;
}

/// The request body as hyper gave it; if dropped before its end, it hands
/// what is left to its `Unread`.
struct Watched {
    body: Option<Incoming>,
    rest: Option<oneshot::Sender<Incoming>>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.body = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let (Some(body), Some(rest)) = (self.body.take(), self.rest.take())
            && !body.is_end_stream()
        {
            let _ = rest.send(body);
        }
    }
}
