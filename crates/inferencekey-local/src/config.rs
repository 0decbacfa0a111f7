//! Start-up configuration (`Config`), the ready-line tokens (random, or derived from an explicit
//! seed), and the ready information (`ReadyInfo`) with its text form as the binary prints it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::LocalError;
use crate::pki::LeafKind;
use crate::real::EngineConfig;
use crate::rng::{mix64, SplitMix64};
use crate::token::{mint, mint_random, ADMIN_PREFIX, LIVE_PREFIX, SDK_PREFIX};

/// Separates the ready-line tokens' stream from the other seeded streams.
const TOKENS_STREAM: u64 = 0x746f_6b65_6e73_0001;

/// How to run the local platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on (loopback unless `allow_remote`).
    pub host: IpAddr,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Allow a non-loopback `host`.
    pub allow_remote: bool,
    /// Slug of the default project.
    pub project: String,
    /// Seed of the tokens, ids, synthetic text and fault draws. `None` (the default): the tokens
    /// come from the operating system's random generator (or the state directory, see README),
    /// and the rest is seeded with 0, so synthetic replies stay the same from run to run.
    pub seed: Option<u64>,
    /// Where to keep state across restarts.
    pub state_dir: Option<PathBuf>,
    /// HTTPS instead of plain HTTP (default [`Tls::Off`]).
    pub tls: Tls,
    /// A PEM file of one or more CA certificates: with TLS on, every client must present a
    /// certificate signed by one of them (mutual TLS), or the handshake fails. Needs `tls` on.
    pub tls_client_ca: Option<PathBuf>,
    /// Real engines (README "Real engines"); off by default: every workload is simulated.
    pub engines: EngineConfig,
}

/// Whether and how the local platform serves HTTPS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Tls {
    /// Plain HTTP (the default).
    #[default]
    Off,
    /// HTTPS with certificates made at start-up: a fresh CA ("inferencekey local CA") and a
    /// 7-day server leaf it signs for `127.0.0.1`, `::1` and `localhost` (and the listen address
    /// when it is another one). The CA is written as `ca.pem` into the state directory, or into
    /// a temporary directory removed when the platform stops; `ReadyInfo::ca_path` says where.
    /// `leaf` other than [`LeafKind::Valid`] serves a leaf clients must refuse (for tests).
    Generate {
        /// Which leaf to serve.
        leaf: LeafKind,
    },
    /// HTTPS with the given PEM files: the certificate chain (leaf first) and its private key.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

impl Tls {
    /// HTTPS with a generated CA and a valid leaf.
    pub fn generate() -> Self {
        Tls::Generate {
            leaf: LeafKind::Valid,
        }
    }

    /// Whether HTTPS is on.
    pub fn is_on(&self) -> bool {
        !matches!(self, Tls::Off)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            allow_remote: false,
            project: "local".to_string(),
            seed: None,
            state_dir: None,
            tls: Tls::Off,
            tls_client_ca: None,
            engines: EngineConfig::default(),
        }
    }
}

impl Config {
    /// The seed of what stays deterministic without `--seed` (ids, synthetic text and
    /// embeddings, fault draws, request ids): the explicit seed, else 0.
    pub fn engine_seed(&self) -> u64 {
        self.seed.unwrap_or(0)
    }
}

/// The tokens of the ready line: random, or derived from an explicit seed (same seed, same tokens).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyTokens {
    /// `ik_sdk_` token with every scope on the default project.
    pub sdk: String,
    /// `ik_live_` key on the whole default project.
    pub live: String,
    /// `ik_admin_` token of the admin API.
    pub admin: String,
}

impl std::fmt::Debug for ReadyTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadyTokens { .. }")
    }
}

impl ReadyTokens {
    /// The tokens for `seed`.
    pub fn derive(seed: u64) -> Self {
        let mut rng = SplitMix64::new(mix64(seed ^ TOKENS_STREAM));
        Self {
            sdk: mint(SDK_PREFIX, &mut rng),
            live: mint(LIVE_PREFIX, &mut rng),
            admin: mint(ADMIN_PREFIX, &mut rng),
        }
    }

    /// Fresh tokens from the operating system's random generator.
    pub fn random() -> Result<Self, LocalError> {
        let mint = |prefix| mint_random(prefix).map_err(LocalError::randomness);
        Ok(Self {
            sdk: mint(SDK_PREFIX)?,
            live: mint(LIVE_PREFIX)?,
            admin: mint(ADMIN_PREFIX)?,
        })
    }
}

/// What a client needs to talk to the running platform; serialises as the ready line.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ReadyInfo {
    /// Base URL (`http://127.0.0.1:41234`; `https://...` with TLS on).
    pub url: String,
    /// Default project slug.
    pub project: String,
    /// `ik_sdk_` token.
    pub sdk_token: String,
    /// `ik_live_` key.
    pub api_key: String,
    /// `ik_admin_` token.
    pub admin_token: String,
    /// With TLS on and a generated CA: the path of its PEM file (`ca.pem`), for clients to
    /// trust. Absent from the ready line when `None`, so plain HTTP's line is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_path: Option<String>,
}

impl std::fmt::Debug for ReadyInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The tokens are secrets of the running platform: keep them out of debug output.
        f.debug_struct("ReadyInfo")
            .field("url", &self.url)
            .field("project", &self.project)
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

impl ReadyInfo {
    /// The ready information of a platform listening on `addr`.
    pub fn new(addr: SocketAddr, project: &str, tokens: &ReadyTokens) -> Self {
        Self {
            url: base_url(addr),
            project: project.to_string(),
            sdk_token: tokens.sdk.clone(),
            api_key: tokens.live.clone(),
            admin_token: tokens.admin.clone(),
            ca_path: None,
        }
    }

    /// The same platform served over HTTPS: an `https://` URL, and the generated CA's path.
    pub fn https(mut self, ca_path: Option<String>) -> Self {
        if let Some(rest) = self.url.strip_prefix("http://") {
            self.url = format!("https://{rest}");
        }
        self.ca_path = ca_path;
        self
    }

    /// The JSON ready line and the four `export` lines, each ending in a newline, exactly as
    /// `inferencekey-local` prints them.
    pub fn ready_text(&self) -> String {
        let line = serde_json::to_string(self).unwrap_or_default();
        format!(
            "{line}\nexport INFERENCEKEY_BASE_URL={}\nexport INFERENCEKEY_PROJECT={}\n\
             export INFERENCEKEY_SDK_TOKEN={}\nexport INFERENCEKEY_API_KEY={}\n",
            self.url, self.project, self.sdk_token, self.api_key
        )
    }
}

/// The URL clients use: a wildcard listen address is reached through loopback.
fn base_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(host, addr.port()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn tokens_follow_the_seed() {
        assert_eq!(ReadyTokens::derive(4), ReadyTokens::derive(4));
        assert_ne!(ReadyTokens::derive(4).sdk, ReadyTokens::derive(5).sdk);
        let tokens = ReadyTokens::derive(0);
        assert!(tokens.sdk.starts_with("ik_sdk_") && tokens.sdk.len() == 7 + 8 + 1 + 64);
        assert!(tokens.live.starts_with("ik_live_") && tokens.live.len() == 8 + 8 + 1 + 64);
        assert!(tokens.admin.starts_with("ik_admin_"));
    }

    #[test]
    fn random_tokens_differ_every_time() {
        let (a, b) = (
            ReadyTokens::random().unwrap(),
            ReadyTokens::random().unwrap(),
        );
        assert!(a.sdk != b.sdk && a.live != b.live && a.admin != b.admin);
        assert!(a.sdk.starts_with("ik_sdk_") && a.sdk.len() == 7 + 8 + 1 + 64);
        assert!(a.admin.starts_with("ik_admin_") && a.admin.len() == 9 + 8 + 1 + 64);
        assert_eq!(Config::default().seed, None);
        assert_eq!(Config::default().engine_seed(), 0);
    }

    #[test]
    fn ready_text_has_five_lines() {
        let addr: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        let info = ReadyInfo::new(addr, "local", &ReadyTokens::derive(0));
        assert_eq!(info.url, "http://127.0.0.1:4000");
        let text = info.ready_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        let parsed: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(parsed["api_key"], info.api_key);
        assert_eq!(
            lines[1],
            "export INFERENCEKEY_BASE_URL=http://127.0.0.1:4000"
        );
        assert_eq!(
            lines[4],
            format!("export INFERENCEKEY_API_KEY={}", info.api_key)
        );
        assert!(!format!("{info:?}").contains("ik_"));
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(
            ReadyInfo::new(v6, "p", &ReadyTokens::derive(0)).url,
            "http://[::1]:5"
        );
    }

    #[test]
    fn ready_line_names_the_ca_only_with_tls() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let plain = ReadyInfo::new(addr, "local", &ReadyTokens::derive(0));
        let line = serde_json::to_string(&plain).unwrap();
        assert!(line.starts_with("{\"url\":\"http://127.0.0.1:4000\",\"project\":\"local\","));
        assert!(line.ends_with(&format!("\"admin_token\":\"{}\"}}", plain.admin_token)));
        assert!(!line.contains("ca_path"));
        let tls = plain.clone().https(Some("/tmp/x/ca.pem".to_string()));
        assert_eq!(tls.url, "https://127.0.0.1:4000");
        let parsed: serde_json::Value = serde_json::to_value(&tls).unwrap();
        assert_eq!(parsed["ca_path"], "/tmp/x/ca.pem");
        assert!(tls
            .ready_text()
            .contains("export INFERENCEKEY_BASE_URL=https://127.0.0.1:4000\n"));
        assert_eq!(plain.clone().https(None).ca_path, None);
        assert!(!Tls::default().is_on() && Tls::generate().is_on());
    }
}
