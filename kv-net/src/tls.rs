//! Optional TLS between peers, with mutual authentication: every node holds a certificate
//! signed by the cluster's CA, and each side of a connection verifies the other's.
//!
//! The dialing side also checks that the listener's certificate names the node id it expects
//! at that address (as a DNS subject alternative name), so a node cannot answer for another;
//! the listening side accepts any certificate of the cluster's CA (the handshake's `Hello`
//! then names the node). TLS wraps the TCP connection before the peer protocol's preamble:
//! the bytes of format.md flow inside it unchanged.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{Error, Result};

/// One node's TLS settings, for both sides ([`PeersOptions::tls`](crate::PeersOptions::tls),
/// [`ServerOptions::tls`](crate::ServerOptions::tls)). Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    pub(crate) client: Arc<ClientConfig>,
    pub(crate) server: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn tls_err(what: &'static str) -> impl FnOnce(rustls::Error) -> Error {
    move |source| Error::Tls {
        what,
        source: Box::new(source),
    }
}

fn pem_err(what: &'static str) -> impl FnOnce(rustls::pki_types::pem::Error) -> Error {
    move |source| Error::Tls {
        what,
        source: Box::new(source),
    }
}

impl Tls {
    /// From PEM text: the cluster CA's certificate(s), this node's certificate chain (signed by
    /// the CA, naming the node id as a DNS name) and its private key.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] naming what could not be read or built.
    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        // ring rather than aws-lc-rs: no C/assembly toolchain to build. rustls marks it
        // deprecated because ring has no post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(ca.map_err(pem_err("reading the CA certificate"))?)
                .map_err(tls_err("adding the CA certificate"))?;
        }
        if roots.is_empty() {
            return Err(Error::Tls {
                what: "reading the CA certificate",
                source: "no certificate in the CA file".into(),
            });
        }
        let roots = Arc::new(roots);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(pem_err("reading the node certificate"))?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(pem_err("reading the node key"))?;

        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|source| Error::Tls {
                    what: "building the client verifier",
                    source: Box::new(source),
                })?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(tls_err("choosing protocol versions"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(tls_err("loading the node certificate"))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err("choosing protocol versions"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(tls_err("loading the node certificate"))?;
        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// As [`Tls::from_pem`], from files (what a server's `--tls-*` flags name).
    ///
    /// # Errors
    ///
    /// [`Error::TlsFile`] if a file cannot be read; as [`Tls::from_pem`].
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::TlsFile {
                path: path.to_path_buf(),
                source,
            })
        };
        Self::from_pem(&read(ca)?, &read(cert)?, &read(key)?)
    }
}

/// The name a dialing side expects in the certificate of the node `node_id`.
pub(crate) fn server_name(node_id: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(node_id.to_string()).map_err(|source| Error::Tls {
        what: "using the node id as a TLS server name",
        source: Box::new(source),
    })
}
