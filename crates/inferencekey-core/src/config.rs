//! Client configuration: settings resolved explicit > environment > default (trimmed, blank = unset),
//! the base URL check, and the transport options (timeouts, retries, user agent).

use std::time::Duration;

use crate::args::{at_least, positive_seconds};
use crate::error::{Error, Result};

/// The platform's public base URL, used when none is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.inferencekey.com";

/// Environment variable for the base URL.
pub(crate) const ENV_BASE_URL: &str = "INFERENCEKEY_BASE_URL";
/// Environment variable for the project slug.
pub(crate) const ENV_PROJECT: &str = "INFERENCEKEY_PROJECT";
/// Environment variable for the control-plane token.
pub(crate) const ENV_SDK_TOKEN: &str = "INFERENCEKEY_SDK_TOKEN";
/// Environment variable for the default data-plane key.
pub(crate) const ENV_API_KEY: &str = "INFERENCEKEY_API_KEY";

/// Environment variable that turns on the SDK's own log output (`debug`, `info`, `warning`, `error`).
pub const ENV_LOG: &str = "INFERENCEKEY_LOG";

/// The levels `INFERENCEKEY_LOG` accepts, in the order the warning for another value lists them.
const LOG_LEVELS: [(&str, log::Level); 4] = [
    ("debug", log::Level::Debug),
    ("info", log::Level::Info),
    ("warning", log::Level::Warn),
    ("error", log::Level::Error),
];

/// What `INFERENCEKEY_LOG` asks for: `Ok(None)` when unset or blank (a library configures no logging by default),
/// `Ok(Some(level))` for one of `debug`, `info`, `warning`, `error` (any case, trimmed), else `Err` with the one
/// warning to show: `INFERENCEKEY_LOG='verbose' is not one of debug, info, warning, error; it is ignored`.
pub fn log_level_from_env() -> std::result::Result<Option<log::Level>, String> {
    log_level(std::env::var(ENV_LOG).ok().as_deref())
}

fn log_level(value: Option<&str>) -> std::result::Result<Option<log::Level>, String> {
    let Some(value) = non_blank(value) else {
        return Ok(None);
    };
    let wanted = value.to_ascii_lowercase();
    if let Some((_, level)) = LOG_LEVELS.iter().find(|(name, _)| *name == wanted) {
        return Ok(Some(*level));
    }
    let accepted: Vec<&str> = LOG_LEVELS.iter().map(|(name, _)| *name).collect();
    // The value is shown redacted: a credential pasted into the wrong variable must not reach a log.
    Err(crate::token::redact(&format!(
        "{ENV_LOG}={} is not one of {}; it is ignored",
        crate::quote::py_repr_str(&value),
        accepted.join(", ")
    )))
}

/// A setting resolved explicit > environment variable `env_var`; values are trimmed and a blank one counts
/// as unset (so `project=""` falls back to the environment, and a blank environment value to the default).
pub fn resolve_setting(explicit: Option<&str>, env_var: &str) -> Option<String> {
    non_blank(explicit).or_else(|| {
        std::env::var(env_var)
            .ok()
            .as_deref()
            .and_then(|v| non_blank(Some(v)))
    })
}

/// `value` trimmed, or `None` when absent or blank.
pub(crate) fn non_blank(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Where a client constructor takes its values from: `new` uses only the values passed, `from_env` falls
/// back to the environment for each one.
#[derive(Clone, Copy)]
pub(crate) enum Sources {
    /// The values passed, trimmed; blank = unset.
    Explicit,
    /// Each value resolved by [`resolve_setting`].
    ExplicitThenEnv,
}

impl Sources {
    /// The value of one setting, `env_var` naming its environment variable.
    pub(crate) fn get(self, explicit: Option<&str>, env_var: &str) -> Option<String> {
        match self {
            Self::Explicit => non_blank(explicit),
            Self::ExplicitThenEnv => resolve_setting(explicit, env_var),
        }
    }
}

/// The base URL to use: `DEFAULT_BASE_URL` when unset, trailing `/` stripped, http(s) only.
pub(crate) fn normalize_base_url(raw: Option<String>) -> Result<String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_BASE_URL.to_owned());
    };
    let trimmed = raw.trim().trim_end_matches('/');
    let lower = trimmed.to_ascii_lowercase();
    let scheme_len = if lower.starts_with("https://") {
        "https://".len()
    } else if lower.starts_with("http://") {
        "http://".len()
    } else {
        return Err(Error::configuration(format!(
            "configuration error: base_url must start with http:// or https:// (got {raw:?})"
        )));
    };
    if trimmed.len() == scheme_len {
        return Err(Error::configuration(format!(
            "configuration error: base_url has no host (got {raw:?})"
        )));
    }
    // `user:password@` would be shown wherever the URL is (reprs, logs) and sent as a second Authorization
    // header; the credential goes in sdk_token= / api_key= instead. The URL is not echoed.
    let authority = trimmed[scheme_len..]
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    if authority.contains('@') {
        return Err(Error::configuration(
            "configuration error: base_url must not hold credentials (user:password@); pass the token as \
             sdk_token= or api_key=",
        ));
    }
    Ok(trimmed.to_owned())
}

/// The `host[:port]` part of a normalized base URL, for error messages.
pub(crate) fn host_of(base_url: &str) -> &str {
    let rest = base_url
        .split_once("://")
        .map_or(base_url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    // Never show credentials embedded in the URL.
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// Transport settings of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportOptions {
    /// Limit on establishing a connection (TCP + TLS).
    pub connect_timeout: Duration,
    /// Idle read timeout: the longest wait for the next bytes of a response. Never a total deadline, so a
    /// long stream that keeps producing is never cut.
    pub read_timeout: Duration,
    /// Retries after the first attempt, for the failures the retry policy allows.
    pub max_retries: u32,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Headers sent with every request (`default_headers`: for gateways and tenants), never `Authorization`.
    pub headers: reqwest::header::HeaderMap,
    /// Which certificates to trust.
    pub verify: crate::net::Verify,
    /// The client certificate for mutual TLS.
    pub client_cert: Option<crate::net::ClientCert>,
    /// The proxy for every request, replacing the environment's (`NO_PROXY` still applies); `None`: the
    /// environment's (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`).
    pub proxy: Option<String>,
}

impl TransportOptions {
    /// These options with `default_headers` (name/value pairs, checked as `Overrides::from_user` checks
    /// headers).
    pub fn with_default_headers(mut self, pairs: &[(String, String)]) -> Result<Self> {
        self.headers = crate::transport::header_map(pairs, "default_headers")?;
        Ok(self)
    }

    /// These options with `overrides` laid over them (as a `with_options` copy of a client has them).
    pub fn with_overrides(mut self, overrides: &crate::transport::Overrides) -> Self {
        overrides.overlay(
            &mut self.read_timeout,
            &mut self.max_retries,
            &mut self.headers,
        );
        self
    }

    /// These options with the network settings a user gave: `verify` (trust), `client_cert` (mutual TLS) and
    /// `proxy` (checked: a supported scheme and a host). Files are read when the client is built.
    pub fn with_network(
        mut self,
        verify: crate::net::Verify,
        client_cert: Option<crate::net::ClientCert>,
        proxy: Option<&str>,
    ) -> Result<Self> {
        self.proxy = proxy.map(crate::net::checked_proxy).transpose()?;
        self.verify = verify;
        self.client_cert = client_cert;
        Ok(self)
    }

    /// Options from the values a user passed, checked before anything is built: `connect_timeout_s` and
    /// `timeout_s` (the idle read timeout) must be positive numbers of seconds, `max_retries` at least 0 (and
    /// small enough to count); each failure is an `ErrorKind::Validation` naming the argument
    /// (`connect_timeout`, `timeout`, `max_retries`). `client` names the SDK flavour for the User-Agent, see
    /// [`TransportOptions::user_agent_for`].
    pub fn from_user(
        connect_timeout_s: f64,
        timeout_s: f64,
        max_retries: i64,
        client: &str,
    ) -> Result<Self> {
        Ok(Self {
            connect_timeout: positive_seconds("connect_timeout", connect_timeout_s)?,
            read_timeout: positive_seconds("timeout", timeout_s)?,
            max_retries: at_least("max_retries", max_retries, 0)?,
            user_agent: Self::user_agent_for(client),
            headers: reqwest::header::HeaderMap::new(),
            verify: crate::net::Verify::Default,
            client_cert: None,
            proxy: None,
        })
    }

    /// The User-Agent of an SDK flavour: `inferencekey-{client}/{version}` (e.g. `inferencekey-python/0.1.0`),
    /// the version being this crate's, which the whole workspace shares.
    pub fn user_agent_for(client: &str) -> String {
        format!("inferencekey-{client}/{}", env!("CARGO_PKG_VERSION"))
    }
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(600),
            max_retries: 2,
            user_agent: Self::user_agent_for("rust"),
            headers: reqwest::header::HeaderMap::new(),
            verify: crate::net::Verify::Default,
            client_cert: None,
            proxy: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::error::ErrorKind;

    // Each test uses its own variable name: tests run in parallel threads of one process.
    #[test]
    fn base_url_with_credentials_is_refused_without_echoing_them() {
        for raw in [
            "https://user:hunter2@api.example.com",
            "http://ik_sdk_a1b2c3d4_ffff@127.0.0.1:8080/x",
            "https://token@host",
        ] {
            let err = normalize_base_url(Some(raw.to_owned())).unwrap_err();
            assert_eq!(err.kind, crate::error::ErrorKind::Configuration);
            assert!(
                err.message.contains("must not hold credentials"),
                "{}",
                err.message
            );
            assert!(
                !err.message.contains("hunter2")
                    && !err.message.contains("ffff")
                    && !err.message.contains("token@")
            );
        }
        // An `@` after the host (a path or query) is not userinfo.
        assert!(normalize_base_url(Some("https://host/a@b".to_owned())).is_ok());
    }

    #[test]
    fn explicit_wins_and_is_trimmed() {
        std::env::set_var("IK_TEST_RESOLVE_A", "from-env");
        assert_eq!(
            resolve_setting(Some("  acme "), "IK_TEST_RESOLVE_A").as_deref(),
            Some("acme")
        );
    }

    #[test]
    fn blank_explicit_falls_back_to_env() {
        std::env::set_var("IK_TEST_RESOLVE_B", "  from-env\n");
        assert_eq!(
            resolve_setting(Some("   "), "IK_TEST_RESOLVE_B").as_deref(),
            Some("from-env")
        );
        assert_eq!(
            resolve_setting(None, "IK_TEST_RESOLVE_B").as_deref(),
            Some("from-env")
        );
    }

    #[test]
    fn blank_env_is_unset() {
        std::env::set_var("IK_TEST_RESOLVE_C", " \t ");
        assert_eq!(resolve_setting(None, "IK_TEST_RESOLVE_C"), None);
        assert_eq!(resolve_setting(None, "IK_TEST_RESOLVE_NEVER_SET"), None);
    }

    #[test]
    fn base_url_default_strip_and_scheme() {
        assert_eq!(normalize_base_url(None).unwrap(), DEFAULT_BASE_URL);
        assert_eq!(
            normalize_base_url(Some("http://127.0.0.1:8080//".into())).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_base_url(Some("HTTPS://x.example/api/".into())).unwrap(),
            "HTTPS://x.example/api"
        );
        let err = normalize_base_url(Some("api.inferencekey.com".into())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Configuration);
        assert!(err
            .message
            .starts_with("configuration error: base_url must start with http:// or https://"));
        assert_eq!(
            normalize_base_url(Some("ftp://x".into())).unwrap_err().kind,
            ErrorKind::Configuration
        );
        assert_eq!(
            normalize_base_url(Some("http://".into())).unwrap_err().kind,
            ErrorKind::Configuration
        );
    }

    #[test]
    fn host_for_messages() {
        assert_eq!(host_of("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(
            host_of("https://api.inferencekey.com/base"),
            "api.inferencekey.com"
        );
        assert_eq!(
            host_of("https://user:pw@proxy.example:8443/x"),
            "proxy.example:8443"
        );
    }

    #[test]
    fn default_options() {
        let options = TransportOptions::default();
        assert_eq!(options.connect_timeout, Duration::from_secs(10));
        assert_eq!(options.read_timeout, Duration::from_secs(600));
        assert_eq!(options.max_retries, 2);
        assert!(options.user_agent.starts_with("inferencekey-rust/0."));
    }

    #[test]
    fn options_from_user_values() {
        let options = TransportOptions::from_user(2.5, 30.0, 0, "python").unwrap();
        assert_eq!(options.connect_timeout, Duration::from_millis(2500));
        assert_eq!(options.read_timeout, Duration::from_secs(30));
        assert_eq!(options.max_retries, 0);
        assert_eq!(
            options.user_agent,
            format!("inferencekey-python/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            TransportOptions::from_user(10.0, 600.0, 2, "rust").unwrap(),
            TransportOptions::default()
        );
    }

    #[test]
    fn options_from_user_refuse_bad_values_with_their_names() {
        let refused = |connect: f64, timeout: f64, retries: i64| {
            let err = TransportOptions::from_user(connect, timeout, retries, "python").unwrap_err();
            assert_eq!(err.kind, ErrorKind::Validation);
            assert_eq!(err.status, None);
            err.message
        };
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(
                refused(bad, 1.0, 0),
                "validation error: connect_timeout must be a positive, finite number of seconds"
            );
            assert_eq!(
                refused(1.0, bad, 0),
                "validation error: timeout must be a positive, finite number of seconds"
            );
        }
        for bad in [-1, i64::MIN] {
            assert_eq!(
                refused(1.0, 1.0, bad),
                "validation error: max_retries must be an integer of at least 0"
            );
        }
        assert_eq!(
            refused(1.0, 1.0, 1 << 40),
            "validation error: max_retries is too large"
        );
        // Checked in argument order: the first bad one is named.
        assert_eq!(
            refused(0.0, 0.0, -1),
            "validation error: connect_timeout must be a positive, finite number of seconds"
        );
    }

    #[test]
    fn log_levels_any_case_and_a_warning_for_anything_else() {
        assert_eq!(log_level(None), Ok(None));
        assert_eq!(log_level(Some("  ")), Ok(None));
        assert_eq!(log_level(Some("debug")), Ok(Some(log::Level::Debug)));
        assert_eq!(log_level(Some(" INFO ")), Ok(Some(log::Level::Info)));
        assert_eq!(log_level(Some("Warning")), Ok(Some(log::Level::Warn)));
        assert_eq!(log_level(Some("ERROR")), Ok(Some(log::Level::Error)));
        assert_eq!(
            log_level(Some("verbose")),
            Err("INFERENCEKEY_LOG='verbose' is not one of debug, info, warning, error; it is ignored".to_owned())
        );
        let token = "ik_sdk_a1b2c3d4_0123456789abcdef0123456789abcdef";
        let warning = log_level(Some(token)).unwrap_err();
        assert!(!warning.contains("0123456789abcdef"), "{warning}");
    }
}
