//! Reading the rest of a request body that the engine stopped reading early.
//!
//! When a PATCH stops before its body ends (another request asked for the upload, or the
//! server is shutting down), answering and closing at once would reset the connection
//! with unread bytes in it; a proxy in front (nginx) then loses the answer and sends its
//! client a 502. So the rest of the body is read and thrown away in the background, for a
//! bounded time, while the answer goes out.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::BodyDataStream;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// Longest a body is drained after its request was answered.
const DRAIN_FOR: Duration = Duration::from_secs(2);

pub(crate) struct DrainOnDrop {
    inner: Option<BodyDataStream>,
    ended: bool,
}

impl DrainOnDrop {
    pub fn new(inner: BodyDataStream) -> Self {
        Self {
            inner: Some(inner),
            ended: false,
        }
    }
}

impl Stream for DrainOnDrop {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let next = inner.poll_next_unpin(cx);
        if matches!(next, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.ended = true;
        }
        next
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let (Some(mut rest), false) = (self.inner.take(), self.ended) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let drain = async { while let Some(Ok(_)) = rest.next().await {} };
                let _ = tokio::time::timeout(DRAIN_FOR, drain).await;
            });
        }
    }
}
