//! TLS on the listeners, with rustls: the certificate and key come from PEM files that are
//! re-read every `tls.reload_interval` (a renewed certificate, a rotated Kubernetes Secret)
//! without a restart; client certificates (mTLS) are verified against `tls.client_ca_file`
//! (and, when set, the revocation lists of `tls.client_crl_file`) and their names handed to
//! authentication ([`ClientIdentity`]). ALPN offers `h2` and `http/1.1`.
//!
//! Handshakes run in their own tasks, each bounded by `tls.handshake_timeout`, so a client
//! that connects and says nothing holds neither the accept loop nor a connection slot for
//! long. The [`Listener`] hands axum finished connections only.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, TlsConfig};
use crate::telemetry;

/// Handshakes in progress at once, per listener; connections beyond it are closed at once
/// (counted as `busy`). Each costs a task and a few KiB until its handshake ends or times out.
pub const MAX_PENDING_HANDSHAKES: usize = 4096;

/// Who the client certificate of a connection names (verified against the client CAs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// DNS and URI subject alternative names, or the subject common name when there is no SAN.
    pub names: Vec<String>,
}

/// What the HTTP layer knows of a connection (`ConnectInfo<Peer>` in every request).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub client: Option<Arc<ClientIdentity>>,
}

/// The served TLS configuration, swapped whole when the files change.
pub struct Tls {
    settings: TlsConfig,
    current: ArcSwap<ServerConfig>,
    /// The file contents `current` was built from.
    loaded: Mutex<Files>,
}

#[derive(PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
    client_crl: Option<Vec<u8>>,
}

impl Files {
    fn read(s: &TlsConfig) -> anyhow::Result<Files> {
        let read = |p: &Path, field: &str| {
            std::fs::read(p).with_context(|| format!("tls.{field}: reading {}", p.display()))
        };
        Ok(Files {
            cert: read(
                s.cert_file.as_deref().context("tls.cert_file unset")?,
                "cert_file",
            )?,
            key: read(
                s.key_file.as_deref().context("tls.key_file unset")?,
                "key_file",
            )?,
            client_ca: match &s.client_ca_file {
                Some(p) => Some(read(p, "client_ca_file")?),
                None => None,
            },
            client_crl: match &s.client_crl_file {
                Some(p) => Some(read(p, "client_crl_file")?),
                None => None,
            },
        })
    }
}

impl Tls {
    /// Reads and checks the files; `None` when TLS is not configured.
    pub fn from_config(settings: &TlsConfig) -> anyhow::Result<Option<Arc<Tls>>> {
        if !settings.enabled() {
            return Ok(None);
        }
        let files = Files::read(settings)?;
        let config = build(settings, &files)?;
        Ok(Some(Arc::new(Tls {
            settings: settings.clone(),
            current: ArcSwap::from_pointee(config),
            loaded: Mutex::new(files),
        })))
    }

    /// Re-reads the files every `reload_interval` for as long as `self` lives elsewhere.
    pub fn spawn_reloader(self: &Arc<Self>) {
        crate::periodic::every(self, self.settings.reload_interval.0, Tls::reload);
    }

    /// Swaps in the files' current contents when they changed and make a working
    /// configuration; otherwise keeps serving the previous one (and says why).
    pub fn reload(&self) {
        let files = match Files::read(&self.settings) {
            Ok(f) => f,
            Err(e) => {
                metrics::counter!(telemetry::TLS_RELOADS, "result" => "error").increment(1);
                tracing::error!(
                    error = format!("{e:#}"),
                    "TLS reload failed; still serving the previous certificate"
                );
                return;
            }
        };
        let mut loaded = self.loaded.lock().expect("not poisoned");
        if *loaded == files {
            return;
        }
        match build(&self.settings, &files) {
            Ok(config) => {
                self.current.store(Arc::new(config));
                *loaded = files;
                metrics::counter!(telemetry::TLS_RELOADS, "result" => "ok").increment(1);
                tracing::info!("TLS certificate reloaded");
            }
            Err(e) => {
                // A half-written renewal (new certificate, old key) lands here and is picked
                // up on a later tick once both files agree; `loaded` stays as it was.
                metrics::counter!(telemetry::TLS_RELOADS, "result" => "error").increment(1);
                tracing::error!(
                    error = format!("{e:#}"),
                    "TLS reload failed; still serving the previous certificate"
                );
            }
        }
    }
}

/// A rustls configuration from PEM contents, with the process's one crypto provider.
fn build(s: &TlsConfig, files: &Files) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .context("tls.cert_file: not a PEM certificate chain")?;
    anyhow::ensure!(
        !certs.is_empty(),
        "tls.cert_file: no CERTIFICATE block in the file"
    );
    let key = PrivateKeyDer::from_pem_slice(&files.key)
        .context("tls.key_file: no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file")?;
    let not_after = cert_not_after(&certs[0]);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(pem) {
                let ca = ca.context("tls.client_ca_file: not a PEM certificate")?;
                roots
                    .add(ca)
                    .context("tls.client_ca_file: unusable CA certificate")?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "tls.client_ca_file: no CERTIFICATE block in the file"
            );
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if let Some(pem) = &files.client_crl {
                let crls = CertificateRevocationListDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .context("tls.client_crl_file: not a PEM revocation list")?;
                anyhow::ensure!(
                    !crls.is_empty(),
                    "tls.client_crl_file: no X509 CRL block in the file"
                );
                let next_update = crls
                    .iter()
                    .map(crl_next_update)
                    .collect::<anyhow::Result<Vec<_>>>()?;
                // The CRL that must be replaced first; unset when none names a next update.
                if let Some(t) = next_update.into_iter().flatten().min() {
                    metrics::gauge!(telemetry::TLS_CLIENT_CRL_NEXT_UPDATE).set(t as f64);
                }
                // As OpenSSL (and so nginx) does: every certificate of the chain below the
                // trust anchor must be covered by a CRL, and a CRL past its nextUpdate fails
                // the handshake rather than vouching for certificates revoked since.
                verifier = verifier.with_crls(crls).enforce_revocation_expiration();
            }
            let verifier = match s.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .context("tls.client_ca_file: building the verifier")?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("tls.cert_file / tls.key_file: the key does not fit the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if let Some(t) = not_after {
        metrics::gauge!(telemetry::TLS_CERT_NOT_AFTER).set(t as f64);
    }
    Ok(config)
}

/// A CRL's `nextUpdate` (Unix time), checking that it parses.
fn crl_next_update(crl: &CertificateRevocationListDer<'_>) -> anyhow::Result<Option<i64>> {
    let (_, x) = x509_parser::parse_x509_crl(crl.as_ref())
        .map_err(|e| anyhow::anyhow!("tls.client_crl_file: not a revocation list: {e}"))?;
    Ok(x.next_update().map(|t| t.timestamp()))
}

fn cert_not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(x.validity().not_after.timestamp())
}

/// `revoked` for a client certificate on a CRL, `revocation_unknown` for one no (current)
/// CRL vouches for, `error` for everything else.
fn failure_reason(e: &io::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(C::Revoked)) => "revoked",
        Some(rustls::Error::InvalidCertificate(
            C::UnknownRevocationStatus
            | C::ExpiredRevocationList
            | C::ExpiredRevocationListContext { .. },
        )) => "revocation_unknown",
        _ => "error",
    }
}

/// The names a verified client certificate carries.
fn client_identity(cert: &CertificateDer<'_>) -> Option<ClientIdentity> {
    use x509_parser::extensions::GeneralName;
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_string()),
                GeneralName::URI(u) => names.push((*u).to_string()),
                _ => {}
            }
        }
    }
    if names.is_empty() {
        if let Some(cn) = x.subject().iter_common_name().next() {
            names.push(cn.as_str().ok()?.to_string());
        }
    }
    Some(ClientIdentity { names })
}

/// A listener axum serves: plain TCP, or TLS with handshakes done off the accept path.
pub enum Listener {
    Plain(TcpListener),
    Tls {
        local: SocketAddr,
        ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    },
}

impl Listener {
    /// `tls` set: handshakes run in the background and `accept` yields finished ones. The
    /// accept task ends (closing the port) when the listener is dropped.
    pub fn new(tcp: TcpListener, tls: Option<Arc<Tls>>) -> io::Result<Listener> {
        let Some(tls) = tls else {
            return Ok(Listener::Plain(tcp));
        };
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(256);
        tokio::spawn(accept_loop(tcp, tls, tx));
        Ok(Listener::Tls { local, ready })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Arc<Tls>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let timeout = tls.settings.handshake_timeout.0;
    let per_source = Arc::new(PerSource::new(
        tls.settings.max_pending_handshakes_per_source,
    ));
    loop {
        let (stream, addr) = tokio::select! {
            _ = tx.closed() => return,
            r = tcp.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // As axum does: out of file descriptors and the like pass; back off.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            metrics::counter!(telemetry::TLS_HANDSHAKE_FAILURES, "reason" => "busy").increment(1);
            continue;
        };
        let Some(source) = per_source.enter(addr.ip()) else {
            metrics::counter!(telemetry::TLS_HANDSHAKE_FAILURES, "reason" => "busy_source")
                .increment(1);
            continue;
        };
        let acceptor = TlsAcceptor::from(tls.current.load_full());
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
            drop(source);
            let stream = match stream {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let reason = failure_reason(&e);
                    metrics::counter!(telemetry::TLS_HANDSHAKE_FAILURES, "reason" => reason)
                        .increment(1);
                    if reason == "error" {
                        tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    } else {
                        tracing::warn!(%addr, error = %e, "TLS client certificate refused");
                    }
                    return;
                }
                Err(_) => {
                    metrics::counter!(telemetry::TLS_HANDSHAKE_FAILURES, "reason" => "timeout")
                        .increment(1);
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let client = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(client_identity)
                .map(Arc::new);
            let _ = tx.send((stream, Peer { addr, client })).await;
        });
    }
}

/// Handshakes in progress per client address, bounded.
struct PerSource {
    max: usize,
    pending: Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl PerSource {
    fn new(max: usize) -> PerSource {
        PerSource {
            max,
            pending: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A slot for one handshake from `ip`, or `None` when it has `max` already.
    fn enter(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<SourceSlot> {
        if self.max == 0 {
            return Some(SourceSlot(None));
        }
        let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot(Some((self.clone(), ip))))
    }
}

struct SourceSlot(Option<(Arc<PerSource>, std::net::IpAddr)>);

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Some((per, ip)) = self.0.take() {
            let mut m = per.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Stream, Peer) {
        match self {
            Listener::Plain(tcp) => {
                // axum's own loop (it backs off on errors such as EMFILE).
                let (s, addr) = axum::serve::Listener::accept(tcp).await;
                (Stream::Left(s), Peer { addr, client: None })
            }
            Listener::Tls { ready, .. } => match ready.recv().await {
                Some((s, peer)) => (Stream::Right(Box::new(s)), peer),
                // The accept task only ends once this receiver is gone; never reached.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        let addr = match self {
            Listener::Plain(tcp) => tcp.local_addr()?,
            Listener::Tls { local, .. } => *local,
        };
        Ok(Peer { addr, client: None })
    }
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Peer {
        stream.remote_addr().clone()
    }
}

/// A plain or TLS connection.
pub type Stream = tokio_util::either::Either<TcpStream, Box<TlsStream<TcpStream>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_identity_prefers_sans_and_falls_back_to_the_common_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["svc.acme.internal".to_string()]).unwrap();
        p.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://acme/ns/shop/sa/checkout".try_into().unwrap(),
        ));
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "ignored-when-sans-exist");
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(
            client_identity(cert.der()).unwrap().names,
            ["svc.acme.internal", "spiffe://acme/ns/shop/sa/checkout"]
        );

        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "batch-job");
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(client_identity(cert.der()).unwrap().names, ["batch-job"]);
    }
}
