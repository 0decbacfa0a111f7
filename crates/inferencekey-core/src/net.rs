//! The network a client goes through: which certificates it trusts (`verify`), the certificate it shows (`cert`),
//! the proxy it uses (`proxy`, or the environment's), and plain words for what fails there (an untrusted or wrong
//! or expired certificate, a refused client certificate, a proxy that cannot be reached).
//!
//! Trust by default is the operating system's store (through `rustls-native-certs`, which also reads
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` as OpenSSL and httpx do) merged with the bundled webpki roots, so a company's
//! inspecting proxy works once its CA is in the OS store or in `SSL_CERT_FILE`, and a bare container still reaches
//! public hosts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// Which certificates a client trusts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Verify {
    /// The operating system's store, `SSL_CERT_FILE`/`SSL_CERT_DIR`, and the bundled roots.
    #[default]
    Default,
    /// Only the certificates of this PEM bundle.
    Bundle(PathBuf),
    /// No verification at all (never the default; logged once as a warning).
    Off,
}

/// A client certificate for mutual TLS: a PEM file with the certificate chain, and the key in it or in its own file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain (PEM), possibly with the key.
    pub cert: PathBuf,
    /// The private key (PEM), when not in `cert`.
    pub key: Option<PathBuf>,
}

/// The proxy schemes a client can use.
const PROXY_SCHEMES: [&str; 4] = ["http://", "https://", "socks5://", "socks5h://"];

/// A proxy URL as the user gave it, checked: one of the supported schemes and a host.
pub fn checked_proxy(proxy: &str) -> Result<String> {
    let trimmed = proxy.trim();
    let lower = trimmed.to_ascii_lowercase();
    let Some(scheme) = PROXY_SCHEMES.iter().find(|s| lower.starts_with(**s)) else {
        return Err(Error::configuration(format!(
            "configuration error: proxy must start with http://, https://, socks5:// or socks5h:// (got {:?})",
            crate::token::redact(trimmed)
        )));
    };
    if trimmed.len() == scheme.len() {
        return Err(Error::configuration(
            "configuration error: proxy has no host",
        ));
    }
    Ok(trimmed.to_owned())
}

/// The PEM bytes of `path`, or a configuration error naming the argument (`what`) and the file.
pub(crate) fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| {
        Error::configuration(format!(
            "configuration error: {what}: cannot read {}: {err}",
            path.display()
        ))
    })
}

/// The certificates of a PEM bundle for `verify=`; a file without any is an error (it would trust nothing).
pub(crate) fn bundle_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let pem = read_pem(path, "verify")?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
        Error::configuration(format!(
            "configuration error: verify: {} is not a PEM certificate bundle: {err}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(Error::configuration(format!(
            "configuration error: verify: {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The identity of a client certificate for `cert=`.
pub(crate) fn identity(cert: &ClientCert) -> Result<reqwest::Identity> {
    let mut pem = read_pem(&cert.cert, "cert")?;
    if let Some(key) = &cert.key {
        pem.push(b'\n');
        pem.extend(read_pem(key, "cert")?);
    }
    reqwest::Identity::from_pem(&pem).map_err(|err| {
        Error::configuration(format!(
            "configuration error: cert: {} is not a PEM certificate with its private key: {err}",
            cert.cert.display()
        ))
    })
}

static VERIFY_OFF_WARNED: AtomicBool = AtomicBool::new(false);

/// Log, once per process, that a client does not verify certificates.
pub(crate) fn warn_verify_off() {
    if !VERIFY_OFF_WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "verify=False: TLS certificates are not verified, so anyone on the network path can read and change \
             this client's traffic; trust the CA instead (verify=\"/path/to/ca.pem\" or SSL_CERT_FILE)"
        );
    }
}

/// The proxy a request to `url` goes through: `explicit` (`proxy=`) or else the environment's, as the HTTP stack
/// reads it (`HTTPS_PROXY`/`https_proxy` for https, `HTTP_PROXY`/`http_proxy` for http, then `ALL_PROXY`); none
/// when `NO_PROXY` names the host, which it does for both. Used to name the proxy in errors.
pub(crate) fn proxy_for(url: &str, explicit: Option<&str>) -> Option<String> {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    };
    let (scheme, rest) = url.split_once("://")?;
    let host = host_only(rest.split('/').next().unwrap_or(rest));
    if let Some(no_proxy) = var(&["NO_PROXY", "no_proxy"]) {
        if no_proxy_matches(&no_proxy, host) {
            return None;
        }
    }
    if let Some(proxy) = explicit {
        return Some(proxy.to_owned());
    }
    let specific = if scheme.eq_ignore_ascii_case("https") {
        var(&["HTTPS_PROXY", "https_proxy"])
    } else {
        var(&["HTTP_PROXY", "http_proxy"])
    };
    specific.or_else(|| var(&["ALL_PROXY", "all_proxy"]))
}

/// The host of an authority (`host:port`, `[v6]:port`), without userinfo or port.
fn host_only(authority: &str) -> &str {
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Whether a `NO_PROXY` list names `host`: `*`, the host itself, or a domain it is in (`corp.example` and
/// `.corp.example` both cover `a.corp.example`).
pub(crate) fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).any(|entry| {
        let entry = entry.trim_start_matches('.').trim_end_matches('.');
        let entry = host_only(entry).to_ascii_lowercase();
        !entry.is_empty() && (entry == "*" || host == entry || host.ends_with(&format!(".{entry}")))
    })
}

/// The `host[:port]` of a proxy URL, for messages (never its credentials).
pub(crate) fn proxy_address(proxy: &str) -> &str {
    let rest = proxy.split_once("://").map_or(proxy, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// What a TLS failure means, in plain words with the fixes, when `err`'s causes hold a rustls error; `None` for
/// every other failure.
pub(crate) fn describe_tls_failure(
    err: &(dyn std::error::Error + 'static),
    host: &str,
) -> Option<String> {
    let Some(failure) = rustls_error(err) else {
        // An HTTP/2 connection error keeps the alert only as text (its source is not exposed).
        let text = chain_text(err);
        let alert = text.split("received fatal alert: ").nth(1)?;
        let alert = alert
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or_default();
        return Some(format!(
            "{host} ended the TLS connection ({alert}){}",
            if matches!(
                alert,
                "CertificateRequired" | "BadCertificate" | "UnknownCA" | "CertificateUnknown"
            ) {
                ": it refused the client certificate or requires one; pass the certificate it expects with \
                 cert=\"client.pem\" or cert=(\"client.pem\", \"client.key\")"
            } else {
                ""
            }
        ));
    };
    let trust_fix = "If your network inspects TLS (a company proxy) or the platform uses a private CA, trust that \
                     CA: set SSL_CERT_FILE to its PEM bundle, or pass verify=\"/path/to/ca.pem\"";
    Some(match failure {
        rustls::Error::InvalidCertificate(cert) => match cert {
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature => format!(
                "the TLS certificate of {host} is not trusted: it was issued by a certificate authority this client \
                 does not know. {trust_fix}"
            ),
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. } => format!(
                "the TLS certificate of {host} is not valid for that name (hostname mismatch): check base_url, or \
                 the proxy in between. {trust_fix}"
            ),
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => format!(
                "the TLS certificate of {host} has expired: the server must renew it (a wrong system clock gives \
                 this too). {trust_fix}"
            ),
            rustls::CertificateError::NotValidYet
            | rustls::CertificateError::NotValidYetContext { .. } => format!(
                "the TLS certificate of {host} is not valid yet (check the system clock). {trust_fix}"
            ),
            other => format!("the TLS certificate of {host} was refused ({other:?}). {trust_fix}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::AccessDenied => format!(
                "{host} refused the TLS handshake because of the client certificate ({alert:?}): pass the \
                 certificate it expects with cert=\"client.pem\" or cert=(\"client.pem\", \"client.key\")"
            ),
            other => format!("{host} ended the TLS handshake ({other:?})"),
        },
        other => format!("the TLS handshake with {host} failed: {other}"),
    })
}

/// Every cause's text, joined.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(cause) = current {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        current = cause.source();
    }
    text
}

/// The rustls error among `err` and its causes (an I/O error wrapping one included).
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = current {
        if let Some(found) = cause.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // An I/O error's `source()` skips the error it wraps, and TLS errors come wrapped in one or two of them.
        if let Some(inner) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            let inner: &'a (dyn std::error::Error + 'static) = inner;
            current = Some(inner);
            continue;
        }
        current = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn no_proxy_lists() {
        for (list, host, expected) in [
            ("127.0.0.1,localhost", "127.0.0.1", true),
            ("localhost", "127.0.0.1", false),
            (".corp.example", "api.corp.example", true),
            ("corp.example", "api.corp.example", true),
            ("corp.example", "notcorp.example", false),
            ("*", "anything", true),
            ("", "127.0.0.1", false),
            (" a.example , 127.0.0.1:8080 ", "127.0.0.1", true),
        ] {
            assert_eq!(no_proxy_matches(list, host), expected, "{list:?} {host:?}");
        }
    }

    #[test]
    fn proxies_are_checked_and_named_without_credentials() {
        assert_eq!(checked_proxy(" http://p:3128 ").unwrap(), "http://p:3128");
        assert!(checked_proxy("socks5h://p:1080").is_ok());
        let err = checked_proxy("ftp://p").unwrap_err();
        assert!(
            err.message.contains("proxy must start with"),
            "{}",
            err.message
        );
        assert!(checked_proxy("http://").is_err());
        assert_eq!(
            proxy_address("http://user:secret@proxy.corp:3128/"),
            "proxy.corp:3128"
        );
        assert_eq!(host_only("[::1]:8080"), "::1");
        assert_eq!(host_only("u:p@h:1"), "h");
    }

    #[test]
    fn tls_failures_are_named_with_their_fixes() {
        let io = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let text = describe_tls_failure(&io, "api.example:443").unwrap();
        assert!(
            text.contains("not trusted")
                && text.contains("SSL_CERT_FILE")
                && text.contains("verify=")
        );
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(describe_tls_failure(&expired, "h")
            .unwrap()
            .contains("expired"));
        let refused = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(describe_tls_failure(&refused, "h")
            .unwrap()
            .contains("cert="));
        assert!(describe_tls_failure(&std::io::Error::other("x"), "h").is_none());
    }
}
