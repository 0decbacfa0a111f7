//! HTTPS: the rustls server configuration a platform serves with (generated or given
//! certificates, optional required client certificates, ALPN `h2` and `http/1.1`), and where a
//! generated CA is written for clients (`ca.pem` in the state directory, or in a temporary
//! directory that lives as long as the platform).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Tls};
use crate::error::LocalError;
use crate::pki;

/// The name of the generated CA's file.
pub const CA_FILE: &str = "ca.pem";

/// What a platform with TLS on serves with, and what it must keep alive while it runs.
pub struct Served {
    /// Wraps every accepted connection.
    pub acceptor: TlsAcceptor,
    /// Where the generated CA was written (`None` with given certificate files).
    pub ca_path: Option<PathBuf>,
    /// The temporary directory holding `ca_path` when there is no state directory; removed on drop.
    pub temp_dir: Option<TempDir>,
}

/// The TLS set-up of `config`, or `None` for plain HTTP. `listen` is the address the platform
/// binds: a generated leaf covers it too when it is neither loopback nor a wildcard.
pub fn setup(config: &Config, listen: IpAddr) -> Result<Option<Served>, LocalError> {
    let (chain, key, ca) = match &config.tls {
        Tls::Off => {
            return match &config.tls_client_ca {
                Some(_) => Err(LocalError::Tls(
                    "a client CA (--tls-client-ca) needs TLS on (--tls, or --tls-cert and --tls-key)"
                        .to_string(),
                )),
                None => Ok(None),
            };
        }
        Tls::Generate { leaf } => {
            let mut hosts: Vec<String> = pki::LOOPBACK_HOSTS.map(str::to_string).to_vec();
            if !listen.is_loopback() && !listen.is_unspecified() {
                hosts.push(listen.to_string());
            }
            let certs = pki::generate_leaf(&hosts, pki::DEFAULT_VALIDITY, *leaf)
                .map_err(|error| LocalError::Tls(error.to_string()))?;
            let chain = certs_from_pem(certs.chain_pem.as_bytes(), Path::new("generated"))?;
            let key = key_from_pem(certs.key_pem.as_bytes(), Path::new("generated"))?;
            (chain, key, Some(certs.ca_pem))
        }
        Tls::Files { cert, key } => {
            let chain = certs_from_pem(&read(cert)?, cert)?;
            let key = key_from_pem(&read(key)?, key)?;
            (chain, key, None)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| LocalError::Tls(error.to_string()))?;
    let builder = match &config.tls_client_ca {
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(|error| LocalError::Tls(format!("the certificate or key is unusable: {error}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let (ca_path, temp_dir) = match ca {
        Some(pem) => {
            let (dir, temp_dir) = match &config.state_dir {
                Some(dir) => (dir.clone(), None),
                None => {
                    let temp = TempDir::create()?;
                    (temp.path().to_path_buf(), Some(temp))
                }
            };
            let path = dir.join(CA_FILE);
            std::fs::write(&path, pem).map_err(|error| {
                LocalError::Tls(format!("cannot write {}: {error}", path.display()))
            })?;
            (Some(path), temp_dir)
        }
        None => (None, None),
    };
    Ok(Some(Served {
        acceptor,
        ca_path,
        temp_dir,
    }))
}

/// Requires every client to present a certificate signed by the CA(s) in the PEM file at `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, LocalError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(&read(path)?, path)? {
        roots.add(cert).map_err(|error| {
            LocalError::Tls(format!("{}: not a usable CA: {error}", path.display()))
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|error| LocalError::Tls(format!("{}: {error}", path.display())))
}

fn read(path: &Path) -> Result<Vec<u8>, LocalError> {
    std::fs::read(path)
        .map_err(|error| LocalError::Tls(format!("cannot read {}: {error}", path.display())))
}

/// Every certificate of a PEM text; at least one.
fn certs_from_pem(pem: &[u8], origin: &Path) -> Result<Vec<CertificateDer<'static>>, LocalError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| LocalError::Tls(format!("{}: bad PEM: {error}", origin.display())))?;
    if certs.is_empty() {
        return Err(LocalError::Tls(format!(
            "{}: no certificate in it",
            origin.display()
        )));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM text.
fn key_from_pem(pem: &[u8], origin: &Path) -> Result<PrivateKeyDer<'static>, LocalError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| {
        LocalError::Tls(format!(
            "{}: no usable private key: {error}",
            origin.display()
        ))
    })
}

/// A directory of our own under the system's temporary directory, removed with what it holds
/// when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<Self, LocalError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(LocalError::randomness)?;
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("inferencekey-local-tls-{suffix}"));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder.create(&path).map_err(|error| {
            LocalError::Tls(format!("cannot create {}: {error}", path.display()))
        })?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            log::debug!("cannot remove {}: {error}", self.0.display());
        }
    }
}
