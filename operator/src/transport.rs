//! One-shot HTTPS requests with mutual TLS to an address whose certificate names a
//! different host: a tenant's etcd member or apiserver pod reached by pod IP, or
//! its Service by ClusterIP, while the certificate names the in-cluster DNS name
//! (which the operator's host may not resolve).
//!
//! Every request opens a fresh connection and the whole exchange (connect,
//! handshake, request, body) runs under one deadline: a stopped process accepts
//! TCP connections (the kernel does) and then never answers, and that must show up
//! as a timeout, not a hang. No pooling: probes run every few seconds, and a pooled
//! connection to a replaced pod would only hide its replacement.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why a probe request failed. The `Display` text is one line, fit for a condition message.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The CA, certificate or key PEM cannot be used.
    #[error("unusable {what}: {reason}")]
    Credentials {
        /// Which input: `CA certificate`, `client certificate`, `client key`.
        what: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// The TLS server name is not a valid DNS name.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// The TCP connection failed.
    #[error("connect {address}: {source}")]
    Connect {
        /// Where to.
        address: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate rejected, connection reset).
    #[error("TLS handshake with {address}: {source}")]
    Tls {
        /// Where to.
        address: SocketAddr,
        /// The handshake error.
        #[source]
        source: std::io::Error,
    },
    /// HTTP framing failed or the connection closed mid-exchange.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a bug in the caller's path).
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    /// No complete answer within the deadline.
    #[error("no answer from {address} within {after:?}")]
    TimedOut {
        /// Where to.
        address: SocketAddr,
        /// The deadline.
        after: Duration,
    },
}

/// How long a TCP connection may take, within the request's timeout. Every probe target
/// is a pod or a Service on the meta cluster's own network, where the kernel completes a
/// handshake in well under a millisecond even when the node is saturated (a stopped
/// process still has its listen backlog). A SYN with no answer means the packet went
/// nowhere, for example a Service whose endpoints are unroutable: waiting the whole
/// request timeout for it held every pass of such a tenant 5 s (the scale benchmark's
/// simulated pods), which held the reconcile slots of every other tenant.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Server names a [`TlsClient`] keeps TLS sessions for, to resume them: one per etcd
/// member (at most 5) for the etcd client, the apiserver's Service name for the admin
/// client. rustls' default is 256, and its session store allocates room for all of them
/// up front. Measured on a fresh heap, 500 configurations: 7.4 KiB resident each with
/// 256, 2.0 KiB with 8 (most of the larger table is never touched, so not resident).
const RESUMPTION_SERVER_NAMES: usize = 8;

/// A TLS client configuration: the CA to trust and the client certificate to present.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsClient {
    // Holds a private key: say nothing.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts only the certificates in `ca_pem` and authenticates with `cert_pem`/`key_pem`.
    pub fn new(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TransportError> {
        let credentials = |what: &'static str| {
            move |error: rustls::pki_types::pem::Error| TransportError::Credentials {
                what,
                reason: error.to_string(),
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(certificate.map_err(credentials("CA certificate"))?).map_err(|error| {
                TransportError::Credentials { what: "CA certificate", reason: error.to_string() }
            })?;
        }
        if roots.is_empty() {
            return Err(TransportError::Credentials {
                what: "CA certificate",
                reason: "no certificate in PEM".into(),
            });
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(credentials("client certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(credentials("client key"))?;
        let mut config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TransportError::Credentials { what: "TLS setup", reason: error.to_string() })?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|error| TransportError::Credentials {
                what: "client certificate",
                reason: error.to_string(),
            })?;
        config.resumption = Resumption::in_memory_sessions(RESUMPTION_SERVER_NAMES);
        Ok(Self { config: Arc::new(config) })
    }

    /// Sends one request to `address`, verifying its certificate against `server_name`,
    /// and returns the status and the whole body, all within `timeout`.
    pub async fn request(
        &self,
        address: SocketAddr,
        server_name: &str,
        method: Method,
        path: &str,
        json_body: Option<&str>,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let exchange = self.exchange(address, server_name, method, path, json_body);
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TransportError::TimedOut { address, after: timeout })?
    }

    /// A TLS connection to `address` that verifies `server_name`; the TCP connection is
    /// set up within [`CONNECT_TIMEOUT`].
    async fn connect(
        &self,
        address: SocketAddr,
        server_name: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TransportError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TransportError::ServerName(server_name.to_string()))?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| TransportError::Connect {
                address,
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()),
                ),
            })?
            .map_err(|source| TransportError::Connect { address, source })?;
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| TransportError::Tls { address, source })
    }

    async fn exchange(
        &self,
        address: SocketAddr,
        server_name: &str,
        method: Method,
        path: &str,
        json_body: Option<&str>,
    ) -> Result<Response, TransportError> {
        let tls = self.connect(address, server_name).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;

        let mut request = Request::builder().method(method).uri(path).header(header::HOST, server_name);
        if json_body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(Bytes::from(json_body.unwrap_or_default().to_string())))?;
        let exchange = async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, TransportError>(Response { status, body })
        };
        // The connection is driven here rather than in a spawned task, so the deadline
        // above drops it too: a spawned driver would outlive a stopped peer forever.
        tokio::pin!(exchange);
        tokio::select! {
            biased;
            response = &mut exchange => response,
            closed = connection => {
                closed?;
                // Closed cleanly (the server said `Connection: close`): the response may
                // already be complete in the body channel.
                exchange.await
            }
        }
    }
}

impl TlsClient {
    /// POSTs `json_body` and returns the response as it arrives, for answers too large
    /// to hold (an etcd snapshot streamed through the gateway). The connection is driven
    /// by a task that ends when the returned [`StreamingResponse`] is dropped; the caller
    /// bounds the reading itself. The connection is set up within `timeout`.
    pub async fn post_streaming(
        &self,
        address: SocketAddr,
        server_name: &str,
        path: &str,
        json_body: &str,
        timeout: Duration,
    ) -> Result<StreamingResponse, TransportError> {
        let start = async {
            let tls = self.connect(address, server_name).await?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            let driver = AbortOnDrop(tokio::spawn(async move {
                let _ = connection.await;
            }));
            let request = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::HOST, server_name)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(json_body.to_string())))?;
            let response = sender.send_request(request).await?;
            Ok::<_, TransportError>(StreamingResponse {
                status: response.status(),
                body: response.into_body(),
                _connection: driver,
            })
        };
        tokio::time::timeout(timeout, start)
            .await
            .map_err(|_| TransportError::TimedOut { address, after: timeout })?
    }
}

/// A response whose body is read as it arrives (see [`TlsClient::post_streaming`]).
pub struct StreamingResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, frame by frame.
    pub body: hyper::body::Incoming,
    _connection: AbortOnDrop,
}

/// Ends the connection's driver task with the response that needs it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A complete HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status.
    pub status: StatusCode,
    /// The whole body.
    pub body: Bytes,
}

impl Response {
    /// The first line of the body, trimmed and shortened, for condition messages.
    pub fn summary(&self) -> String {
        const MAX_CHARS: usize = 120;
        let text = String::from_utf8_lossy(&self.body);
        let line = text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("");
        let mut summary: String = line.chars().take(MAX_CHARS).collect();
        if line.chars().count() > MAX_CHARS {
            summary.push_str("...");
        }
        summary
    }
}

/// The probes' crypto provider, named rather than taken from the process default, so
/// the probes work whatever else installed (or did not install) a default provider.
/// One for the process: every tenant holds two [`TlsClient`]s.
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::LazyLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    PROVIDER.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &str) -> Response {
        Response { status: StatusCode::OK, body: Bytes::from(body.to_string()) }
    }

    #[test]
    fn summary_is_the_first_non_empty_line_shortened() {
        assert_eq!(response("\n  ok  \nmore").summary(), "ok");
        assert_eq!(response("").summary(), "");
        let long = response(&"x".repeat(200)).summary();
        assert_eq!(long.len(), 123);
        assert!(long.ends_with("..."));
    }

    #[test]
    fn garbage_credentials_are_rejected_with_what_was_wrong() {
        let error = TlsClient::new(b"not pem", b"", b"").expect_err("no CA");
        assert!(error.to_string().starts_with("unusable CA certificate"), "{error}");
    }

    #[tokio::test]
    async fn a_peer_that_accepts_but_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        // Accept and hold the connection without a TLS handshake, like a stopped process.
        let _held = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let client = test_client();
        let started = std::time::Instant::now();
        let error = client
            .request(address, "etcd.example", Method::GET, "/health", None, Duration::from_millis(300))
            .await
            .expect_err("must time out");
        assert!(matches!(error, TransportError::TimedOut { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    fn test_client() -> TlsClient {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).expect("ca");
        let client = rcgen::generate_simple_self_signed(vec!["client.example".to_string()]).expect("client");
        TlsClient::new(
            ca.cert.pem().as_bytes(),
            client.cert.pem().as_bytes(),
            client.signing_key.serialize_pem().as_bytes(),
        )
        .expect("client config")
    }
}
