//! Short-lived certificates for the local platform's HTTPS and for tests of the SDK's TLS: a
//! certificate authority, server leaves it signs (valid, expired, or for the wrong host) and
//! client certificates for mutual TLS. Everything is made fresh in memory (ECDSA P-256 keys,
//! `rcgen` on `ring`) and handed out as PEM text; nothing is ever read from or kept in the
//! repository.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// How long generated certificates live unless asked otherwise: 7 days.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The names a generated server leaf covers: IP SANs for `127.0.0.1` and `::1`, DNS SAN `localhost`.
pub const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "::1", "localhost"];
/// The only name of a [`LeafKind::WrongHost`] leaf.
pub const WRONG_HOST: &str = "wrong.example";
/// Common name of the CA that [`generate`] makes.
pub const CA_COMMON_NAME: &str = "inferencekey local CA";
/// Common name of the CA that [`generate_client`] makes.
pub const CLIENT_CA_COMMON_NAME: &str = "inferencekey local client CA";
/// Certificates start this long before "now", so a client whose clock is a little behind still
/// accepts them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// An expired leaf ended this long ago.
const EXPIRED_AGO: Duration = Duration::from_secs(24 * 60 * 60);

/// Why certificates could not be made (a host name that is no valid DNS name, a validity out of
/// range, a failure of the key generator).
#[derive(Debug, thiserror::Error)]
#[error("cannot generate certificates: {0}")]
pub struct PkiError(String);

impl PkiError {
    fn new(cause: impl std::fmt::Display) -> Self {
        Self(cause.to_string())
    }
}

impl From<rcgen::Error> for PkiError {
    fn from(error: rcgen::Error) -> Self {
        Self::new(error)
    }
}

/// Which server leaf to make: a good one, or one a verifying client must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeafKind {
    /// Valid from a few minutes ago for the requested validity, for the requested hosts.
    #[default]
    Valid,
    /// For the requested hosts, but its `not_after` lies a day in the past.
    Expired,
    /// Valid, but for [`WRONG_HOST`] only, whatever hosts were requested.
    WrongHost,
}

/// A CA and a server leaf it signed, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerCerts {
    /// The CA certificate: what a client trusts (`ca.pem`).
    pub ca_pem: String,
    /// The server's certificate chain, leaf first (the leaf alone: the CA is the trust anchor).
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for ServerCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCerts").finish_non_exhaustive()
    }
}

/// A client certificate for mutual TLS and the CA that signed it, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCerts {
    /// The CA certificate: what the server is told to require (`--tls-client-ca`).
    pub ca_pem: String,
    /// The client certificate.
    pub cert_pem: String,
    /// The client certificate's private key (PKCS#8).
    pub key_pem: String,
}

impl ClientCerts {
    /// Certificate then key in one PEM text, the shape of reqwest's `Identity::from_pem` and of
    /// Python's `ssl.SSLContext.load_cert_chain` with a single file.
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

impl std::fmt::Debug for ClientCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCerts").finish_non_exhaustive()
    }
}

/// A certificate authority held in memory: its certificate and signing key. Issue as many
/// server leaves and client certificates from it as a test needs.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A fresh self-signed CA named `common_name`, valid from a few minutes ago for `validity`.
    pub fn new(common_name: &str, validity: Duration) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = named(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = window(validity)?;
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server leaf signed by this CA. `hosts` are IP addresses (`127.0.0.1`, `::1` or `[::1]`)
    /// or DNS names; `kind` makes the leaf expired or for [`WRONG_HOST`] instead.
    pub fn issue_server(
        &self,
        hosts: &[impl AsRef<str>],
        validity: Duration,
        kind: LeafKind,
    ) -> Result<ServerCerts, PkiError> {
        let names = match kind {
            LeafKind::WrongHost => vec![san(WRONG_HOST)?],
            LeafKind::Valid | LeafKind::Expired => hosts
                .iter()
                .map(|host| san(host.as_ref()))
                .collect::<Result<Vec<_>, _>>()?,
        };
        if names.is_empty() {
            return Err(PkiError::new(
                "a server certificate needs at least one host",
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = named("inferencekey local server");
        params.subject_alt_names = names;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        (params.not_before, params.not_after) = match kind {
            LeafKind::Expired => expired_window(validity)?,
            LeafKind::Valid | LeafKind::WrongHost => window(validity)?,
        };
        let (cert_pem, key_pem) = self.sign_leaf(params)?;
        Ok(ServerCerts {
            ca_pem: self.cert_pem.clone(),
            chain_pem: cert_pem,
            key_pem,
        })
    }

    /// A client certificate named `common_name` (extended key usage `clientAuth`) signed by this CA.
    pub fn issue_client(
        &self,
        common_name: &str,
        validity: Duration,
    ) -> Result<ClientCerts, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = named(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        (params.not_before, params.not_after) = window(validity)?;
        let (cert_pem, key_pem) = self.sign_leaf(params)?;
        Ok(ClientCerts {
            ca_pem: self.cert_pem.clone(),
            cert_pem,
            key_pem,
        })
    }

    /// Signs an end-entity certificate with a fresh key: (certificate PEM, key PEM).
    fn sign_leaf(&self, mut params: CertificateParams) -> Result<(String, String), PkiError> {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A fresh CA ([`CA_COMMON_NAME`]) and a valid server leaf it signed for `hosts` (usually
/// [`LOOPBACK_HOSTS`]), both living `validity` (usually [`DEFAULT_VALIDITY`]).
pub fn generate(hosts: &[impl AsRef<str>], validity: Duration) -> Result<ServerCerts, PkiError> {
    generate_leaf(hosts, validity, LeafKind::Valid)
}

/// [`generate`] with the choice of leaf: [`LeafKind::Expired`] or [`LeafKind::WrongHost`] make
/// the certificates a client that verifies must refuse, though it trusts the CA.
pub fn generate_leaf(
    hosts: &[impl AsRef<str>],
    validity: Duration,
    kind: LeafKind,
) -> Result<ServerCerts, PkiError> {
    Authority::new(CA_COMMON_NAME, validity)?.issue_server(hosts, validity, kind)
}

/// A fresh client CA ([`CLIENT_CA_COMMON_NAME`]) and a client certificate named `common_name`
/// it signed, for mutual TLS: start the platform with the CA as `tls_client_ca` and present the
/// certificate and key.
pub fn generate_client(common_name: &str, validity: Duration) -> Result<ClientCerts, PkiError> {
    Authority::new(CLIENT_CA_COMMON_NAME, validity)?.issue_client(common_name, validity)
}

/// A distinguished name with only a common name.
fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// A subject alternative name: an IP address (bracketed IPv6 accepted) or a DNS name.
fn san(host: &str) -> Result<SanType, PkiError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let name = bare
        .to_string()
        .try_into()
        .map_err(|error| PkiError::new(format!("invalid host name {host:?}: {error}")))?;
    Ok(SanType::DnsName(name))
}

/// (not before, not after) of a certificate valid from a few minutes ago for `validity`.
fn window(validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    let now = OffsetDateTime::now_utc();
    Ok((shift(now, BACKDATE, false)?, shift(now, validity, true)?))
}

/// (not before, not after) of a certificate that expired a day ago after living `validity`.
fn expired_window(validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    let not_after = shift(OffsetDateTime::now_utc(), EXPIRED_AGO, false)?;
    Ok((shift(not_after, validity, false)?, not_after))
}

/// `at` moved forward (or back) by `by`, or an error when that leaves the representable range.
fn shift(at: OffsetDateTime, by: Duration, forward: bool) -> Result<OffsetDateTime, PkiError> {
    let by = time::Duration::try_from(by).map_err(PkiError::new)?;
    let moved = if forward {
        at.checked_add(by)
    } else {
        at.checked_sub(by)
    };
    moved.ok_or_else(|| PkiError::new("validity out of range"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn pem_shapes() {
        let certs = generate(&LOOPBACK_HOSTS, DEFAULT_VALIDITY).unwrap();
        assert!(certs.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(certs.ca_pem, certs.chain_pem);
        assert!(!format!("{certs:?}").contains("BEGIN"));
        let client = generate_client("tester", DEFAULT_VALIDITY).unwrap();
        assert_eq!(
            client.identity_pem(),
            format!("{}{}", client.cert_pem, client.key_pem)
        );
        // Every call makes a new CA.
        assert_ne!(
            generate(&["localhost"], DEFAULT_VALIDITY).unwrap().ca_pem,
            certs.ca_pem
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let none: [&str; 0] = [];
        assert!(generate(&none, DEFAULT_VALIDITY).is_err());
        assert!(generate(&["bad name\u{7f}é"], DEFAULT_VALIDITY).is_err());
        assert!(generate(&["localhost"], Duration::MAX).is_err());
        assert!(generate(&["[::1]", "127.0.0.1"], DEFAULT_VALIDITY).is_ok());
    }

    #[test]
    fn windows() {
        let now = OffsetDateTime::now_utc();
        let (start, end) = window(DEFAULT_VALIDITY).unwrap();
        assert!(start < now && end > now + time::Duration::days(6));
        let (start, end) = expired_window(DEFAULT_VALIDITY).unwrap();
        assert!(start < end && end < now - time::Duration::hours(23));
    }
}
