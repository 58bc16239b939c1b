//! HTTPS served directly (feature `tls`): a certificate made here, self-signed for `localhost`, is served and
//! trusted by a rustls client; the API answers over it with its usual headers, and a plain-HTTP client on the TLS
//! port gets no answer in clear.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use facematch::http::{ServerConfig, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_over_tls_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let server = TestServer::start(&data, ServerConfig { tls: Some(TlsConfig { cert, key }), ..ServerConfig::default() });
    let addr = server.base.trim_start_matches("http://").to_string();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("handshake with the configured certificate");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut answer)).await.expect("an answer").ok();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 200 ok"), "{answer}");
    assert!(answer.contains("x-content-type-options: nosniff"), "{answer}");
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");

    // Plain HTTP on the TLS port: no answer in clear, the connection just ends.
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), plain.read_to_end(&mut seen)).await.expect("the server closes");
    assert!(!String::from_utf8_lossy(&seen).contains("200 OK"), "answered in clear");
}
