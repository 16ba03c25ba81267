//! A TCP proxy the tests control, so faults need no container runtime:
//! - `cut()` drops every connection and refuses new ones until `restore()`;
//! - `drop_traffic()` keeps connections open but throws away every byte (a black hole: the
//!   peer hears nothing, as in a network partition without resets) until `restore()`;
//! - `delay(d)` holds every chunk for `d` before forwarding it (a slow broker);
//! - `restore()` passes traffic again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

struct State {
    cut: AtomicBool,
    dropping: AtomicBool,
    delay_ms: AtomicU64,
    upstream: SocketAddr,
    conns: Mutex<Vec<AbortHandle>>,
}

impl Proxy {
    /// Listens on `listen` (use port 0 for any) and forwards to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            cut: AtomicBool::new(false),
            dropping: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            upstream,
            conns: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if st.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let st2 = st.clone();
                let upstream = st.upstream;
                let task = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(pump(cr, sw, st2.clone()), pump(sr, cw, st2));
                    }
                });
                st.conns.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            state,
            accept,
        }
    }

    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for c in self.state.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn drop_traffic(&self) {
        self.state.dropping.store(true, Ordering::SeqCst);
    }

    pub fn delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Passes traffic again. Connections that lost bytes to `drop_traffic` are closed (their
    /// streams are out of step), as a partition that outlived TCP's patience would leave them.
    pub fn restore(&self) {
        self.state.delay_ms.store(0, Ordering::SeqCst);
        if self.state.dropping.swap(false, Ordering::SeqCst) {
            for c in self.state.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies one direction, applying the proxy's current fault.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    st: Arc<State>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if st.dropping.load(Ordering::SeqCst) {
            continue;
        }
        let delay = st.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
