//! What a connection is doing, seen from its bytes and its requests, so that one that holds a
//! slot without using it is closed: a request head not complete `server.header_read_timeout`
//! after its first byte (or after the connection opened: a client that connects and sends
//! nothing, or sends `POST /v1/events HTTP/1.1` and a `Host` header and then nothing), or no
//! request in flight for `server.idle_timeout`.
//!
//! hyper's own HTTP/1 header timeout also runs while a keep-alive connection waits for its
//! next request, so it cannot be short without closing idle connections as early, and the
//! protocol detection in front of it (HTTP/1 or HTTP/2) has no timer at all; hence this.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// No time recorded.
const NONE: u64 = u64::MAX;

/// Shared by a connection's IO, its requests and its watchdog.
pub struct Activity {
    opened: Instant,
    /// Requests whose answer is not produced yet.
    in_flight: AtomicUsize,
    /// Milliseconds since `opened` when the bytes of a request head began arriving (and no
    /// request has been dispatched since); `NONE` when none is arriving.
    head_since: AtomicU64,
    /// When the last request was answered (or the connection opened).
    idle_since: AtomicU64,
    /// HTTP/2: requests are streams, frames between them (PING, SETTINGS) are not heads.
    h2: AtomicBool,
    /// Bytes read so far, up to the HTTP/2 preface's length (for telling the protocol).
    sniffed: AtomicUsize,
}

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A request head took longer than `server.header_read_timeout`: cut.
    SlowHead,
    /// No request for `server.idle_timeout`: closed gracefully.
    Idle,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            // A new connection owes us a request head (or the HTTP/2 preface) at once.
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            sniffed: AtomicUsize::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Held for as long as a request is being answered.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(NONE, Ordering::SeqCst);
        RequestGuard(self.clone())
    }

    fn read(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let seen = self.sniffed.load(Ordering::Relaxed);
        if seen < H2_PREFACE.len() {
            let n = data.len().min(H2_PREFACE.len() - seen);
            if data[..n] != H2_PREFACE[seen..seen + n] {
                // Not HTTP/2: stop looking.
                self.sniffed.store(H2_PREFACE.len(), Ordering::Relaxed);
            } else {
                self.sniffed.store(seen + n, Ordering::Relaxed);
                if seen + n == H2_PREFACE.len() {
                    self.h2.store(true, Ordering::SeqCst);
                    self.head_since.store(NONE, Ordering::SeqCst);
                }
                return;
            }
        }
        if self.h2.load(Ordering::Relaxed) {
            return;
        }
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            let _ = self.head_since.compare_exchange(
                NONE,
                self.now(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// Resolves when the connection should end, and why. Deadlines come from the recorded
    /// times; the watchdog looks at least every min(header, idle) timeout, so a state it has
    /// not seen yet (bytes of a head, an answer) never makes it late.
    pub async fn watch(
        self: Arc<Self>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Verdict {
        let header = header_timeout.as_millis() as u64;
        let idle = idle_timeout.as_millis() as u64;
        let every = header.min(idle);
        loop {
            let now = self.now();
            let wait = if self.in_flight.load(Ordering::SeqCst) > 0 {
                // Bodies and handlers have timeouts of their own; look again later.
                every
            } else {
                match self.head_since.load(Ordering::SeqCst) {
                    NONE => {
                        let since = self.idle_since.load(Ordering::SeqCst);
                        let elapsed = now.saturating_sub(since);
                        if elapsed >= idle {
                            return Verdict::Idle;
                        }
                        (idle - elapsed).min(every)
                    }
                    since => {
                        let elapsed = now.saturating_sub(since);
                        if elapsed >= header {
                            return Verdict::SlowHead;
                        }
                        (header - elapsed).min(every)
                    }
                }
            };
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    }
}

pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now(), Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's IO, reporting what it reads to its [`Activity`].
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            this.activity.read(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_head_that_does_not_finish_is_cut_and_an_idle_connection_closed() {
        let header = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        // Connected, then nothing: cut at the header timeout.
        let a = Activity::new();
        let t = Instant::now();
        assert_eq!(a.clone().watch(header, idle).await, Verdict::SlowHead);
        assert_eq!(t.elapsed(), header);

        // A request answered, then silence: closed as idle, counted from the answer.
        let a = Activity::new();
        drop(a.request());
        let t = Instant::now();
        assert_eq!(a.clone().watch(header, idle).await, Verdict::Idle);
        assert!(t.elapsed() >= idle && t.elapsed() < idle + Duration::from_secs(1));

        // Bytes of the next head after the answer: the header timeout runs from them.
        let a = Activity::new();
        drop(a.request());
        tokio::time::sleep(Duration::from_secs(30)).await;
        a.read(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n");
        let t = Instant::now();
        assert_eq!(a.clone().watch(header, idle).await, Verdict::SlowHead);
        assert_eq!(t.elapsed(), header);

        // HTTP/2: frames between requests are not heads; only idleness ends it.
        let a = Activity::new();
        a.read(H2_PREFACE);
        a.read(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00ping1234");
        let t = Instant::now();
        assert_eq!(a.clone().watch(header, idle).await, Verdict::Idle);
        assert!(t.elapsed() >= idle - Duration::from_secs(1));

        // A request in flight holds the connection open however long it takes.
        let a = Activity::new();
        let guard = a.request();
        let watch = tokio::spawn(a.clone().watch(header, idle));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watch.is_finished());
        drop(guard);
        assert_eq!(watch.await.unwrap(), Verdict::Idle);
    }
}
