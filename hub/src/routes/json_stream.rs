//! A response body written by a blocking serializer, a piece at a time.
//!
//! `serde_json::to_writer` into a [`Pieces`] writer hands the body out in
//! [`PIECE`]-sized pieces over a small channel: at most a few pieces are in
//! memory whatever the size of the document, and a reader that stops reading
//! stalls the writer (then ends it after [`STALL`]) instead of growing a buffer.

use std::io::{self, Write};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Bytes per piece handed to the connection.
const PIECE: usize = 64 << 10;
/// Pieces queued between the writer and the connection.
const QUEUED: usize = 4;
/// Longest the writer waits for a reader to take a piece.
const STALL: Duration = Duration::from_secs(60);

/// A body whose bytes `write` produces on a blocking thread. An error from
/// `write` (or a reader gone away) ends the body early: the status line is
/// sent already, so the client sees a truncated response, never a wrong one.
pub(crate) fn body(write: impl FnOnce(&mut Pieces) -> io::Result<()> + Send + 'static) -> Body {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(QUEUED);
    let rt = Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = Pieces { buf: Vec::with_capacity(PIECE), tx, rt };
        let result = write(&mut out).and_then(|()| out.flush());
        if let Err(e) = result {
            tracing::debug!(error = %e, "a streamed response ended early");
            // Tell the connection, so it aborts rather than ends cleanly
            // (a reader that is gone or stalled hears nothing either way).
            let _ = out.rt.block_on(tokio::time::timeout(STALL, out.tx.send(Err(e))));
        }
    });
    Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// The writer [`body`] hands out.
pub(crate) struct Pieces {
    buf: Vec<u8>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    rt: Handle,
}

impl Write for Pieces {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= PIECE {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        match self.rt.block_on(tokio::time::timeout(STALL, self.tx.send(Ok(piece)))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away")),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the reader stopped reading")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_large_document_arrives_whole_in_bounded_pieces() {
        let items: Vec<u64> = (0..200_000).collect();
        let expected = serde_json::to_vec(&items).expect("json");
        let body = body(move |out| serde_json::to_writer(out, &items).map_err(io::Error::from));
        let mut stream = body.into_data_stream();
        let mut got = Vec::new();
        let mut largest = 0;
        while let Some(piece) = futures::StreamExt::next(&mut stream).await {
            let piece = piece.expect("piece");
            largest = largest.max(piece.len());
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, expected);
        assert!(largest < 2 * PIECE, "a piece of {largest} bytes");
    }

    #[tokio::test]
    async fn an_error_ends_the_body_with_an_error() {
        let body = body(|out| {
            out.write_all(&[b'x'; PIECE])?;
            Err(io::Error::other("broken"))
        });
        assert!(axum::body::to_bytes(body, usize::MAX).await.is_err(), "a failed document must not end cleanly");
    }
}
