//! The `Host` check against DNS rebinding: unless remote access is allowed, a request must name
//! the platform by a loopback name and its own port (`localhost:<port>`, `127.x.y.z:<port>`,
//! `[::1]:<port>`), or a web page whose name an attacker points at 127.0.0.1 could read it.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::http::request::Parts;
use axum::http::uri::Authority;
use axum::http::{header, HeaderValue};

use crate::token::redact_text;

/// Longest part of a refused host that an error message repeats.
const ECHO_CHARS: usize = 100;

/// Why a request's host is refused: the message of a 403 `host_forbidden`. `https`: the platform
/// serves HTTPS (a host without a port then means 443, and the message says `https://`).
pub fn refusal(parts: &Parts, port: u16, https: bool) -> Option<String> {
    // HTTP/2 carries the host as `:authority`, which hyper puts in the URI, as it does for an
    // HTTP/1.1 request in absolute form; HTTP/1.1 otherwise sends a `Host` header. Every name
    // the request gives must be ours. One with none at all (HTTP/1.0) is not a browser's: let it in.
    let from_uri = parts.uri.authority().map(Authority::as_str);
    let from_headers = parts.headers.get_all(header::HOST).iter().map(host_text);
    from_uri
        .into_iter()
        .chain(from_headers)
        .find(|host| !is_loopback_authority(host, port, https))
        .map(|host| {
            let scheme = if https { "https" } else { "http" };
            let shown: String = redact_text(host).chars().take(ECHO_CHARS).collect();
            format!(
                "Host \"{shown}\" is not this platform's loopback address: use \
                 {scheme}://127.0.0.1:{port} or {scheme}://localhost:{port} (the local platform refuses \
                 other host names, against DNS rebinding, unless it is started with --allow-remote)"
            )
        })
}

/// A header value as text (a value that is not visible ASCII never matches).
fn host_text(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or("\u{0}")
}

/// Whether `authority` (`host[:port]`) is a loopback name with `port` (when it has none: 80, or
/// 443 for `https`).
fn is_loopback_authority(authority: &str, port: u16, https: bool) -> bool {
    if authority.contains('@') {
        return false;
    }
    let Ok(parsed) = authority.parse::<Authority>() else {
        return false;
    };
    let given = match parsed.port() {
        Some(given) => given.as_u16(),
        None if authority.ends_with(':') => return false,
        None if https => 443,
        None => 80,
    };
    given == port && is_loopback_host(parsed.host())
}

/// `localhost` (any case), an address of 127.0.0.0/8, or `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::http::Request;

    #[test]
    fn loopback_names_with_our_port_only() {
        for ok in [
            "127.0.0.1:4000",
            "127.9.8.7:4000",
            "localhost:4000",
            "LocalHost:4000",
            "[::1]:4000",
            "[0:0:0:0:0:0:0:1]:4000",
        ] {
            assert!(is_loopback_authority(ok, 4000, false), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:4000",
            "127.0.0.1:4001",
            "127.0.0.1",
            "localhost",
            "localhost:",
            "localhost.:4000",
            "localhost.evil.example:4000",
            "127.0.0.1.evil.example:4000",
            "0.0.0.0:4000",
            "10.0.0.1:4000",
            "[::2]:4000",
            "[::ffff:127.0.0.1]:4000",
            "::1:4000",
            "127.1:4000",
            "user@127.0.0.1:4000",
            "127.0.0.1:99999",
            "127.0.0.1:4000:4000",
            "",
        ] {
            assert!(!is_loopback_authority(bad, 4000, false), "{bad}");
        }
        assert!(is_loopback_authority("localhost", 80, false));
        assert!(is_loopback_authority("127.0.0.1", 80, false));
        // Over HTTPS a host without a port means 443.
        assert!(is_loopback_authority("localhost", 443, true));
        assert!(!is_loopback_authority("localhost", 80, true));
        assert!(is_loopback_authority("127.0.0.1:4000", 4000, true));
    }

    fn parts(uri: &str, hosts: &[&[u8]]) -> Parts {
        let mut request = Request::get(uri);
        for host in hosts {
            request = request.header(header::HOST, HeaderValue::from_bytes(host).unwrap());
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn every_name_the_request_gives_is_checked() {
        assert_eq!(refusal(&parts("/x", &[b"127.0.0.1:80"]), 80, false), None);
        // No host at all (HTTP/1.0): not from a browser.
        assert_eq!(refusal(&parts("/x", &[]), 80, false), None);
        let message = refusal(&parts("/x", &[b"evil.example"]), 80, false).unwrap();
        assert!(message.contains("\"evil.example\""), "{message}");
        assert!(message.contains("http://127.0.0.1:80"), "{message}");
        let message = refusal(&parts("/x", &[b"evil.example:443"]), 443, true).unwrap();
        assert!(message.contains("https://127.0.0.1:443"), "{message}");
        // A second Host header, the URI's authority (HTTP/2, absolute form): each must pass.
        assert!(refusal(&parts("/x", &[b"localhost", b"evil.example"]), 80, false).is_some());
        assert!(refusal(&parts("http://evil.example/x", &[b"localhost"]), 80, false).is_some());
        assert!(refusal(&parts("http://localhost/x", &[b"evil.example"]), 80, false).is_some());
        assert_eq!(refusal(&parts("http://[::1]/x", &[]), 80, false), None);
        assert!(refusal(&parts("/x", &[b"caf\xc3\xa9:80"]), 80, false).is_some());
        // Echoed short and without tokens.
        let long = format!("ik_admin_0a1b2c3d_{}", "f".repeat(300));
        let message = refusal(&parts("/x", &[long.as_bytes()]), 80, false).unwrap();
        assert!(message.contains("ik_admin_0a1b2c3d…") && !message.contains("fff"));
    }
}
