//! Credentials: the token table with each token's grant (project, scopes, workload) and the
//! checks of both planes. Presented tokens are compared with stored ones in constant time.

use std::collections::HashMap;
use std::fmt;

use axum::http::{header, HeaderMap};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::reply::ApiError;
use crate::token::{redact_token, ADMIN_PREFIX, LIVE_PREFIX, SDK_PREFIX};

/// A capability of an `ik_sdk_` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// List workloads and watch readiness.
    #[serde(rename = "workload:read")]
    WorkloadRead,
    /// Create and patch workloads.
    #[serde(rename = "workload:write")]
    WorkloadWrite,
    /// Delete workloads.
    #[serde(rename = "workload:delete")]
    WorkloadDelete,
    /// Set `worker_id` / `gpu_resource_id`.
    #[serde(rename = "assignment:write")]
    AssignmentWrite,
}

impl Scope {
    /// Every scope, the default grant of an `ik_sdk_` token.
    pub const ALL: [Scope; 4] = [
        Scope::WorkloadRead,
        Scope::WorkloadWrite,
        Scope::WorkloadDelete,
        Scope::AssignmentWrite,
    ];

    /// The wire name (`workload:read`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::WorkloadRead => "workload:read",
            Scope::WorkloadWrite => "workload:write",
            Scope::WorkloadDelete => "workload:delete",
            Scope::AssignmentWrite => "assignment:write",
        }
    }

    /// The scope named `name`, if any.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == name)
    }
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Grant {
    /// An `ik_sdk_` management token on one project.
    Sdk {
        /// Project slug.
        project: String,
        /// Granted scopes.
        scopes: Vec<Scope>,
    },
    /// An `ik_live_` data key on one workload, or on a whole project when `workload` is `None`.
    Live {
        /// Project slug.
        project: String,
        /// Workload slug, or the whole project.
        workload: Option<String>,
    },
}

impl Grant {
    /// The project the grant is scoped to.
    pub fn project(&self) -> &str {
        match self {
            Grant::Sdk { project, .. } | Grant::Live { project, .. } => project,
        }
    }
}

/// A stored token with its grant (the persisted form).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The full token.
    pub token: String,
    /// What it may do.
    #[serde(flatten)]
    pub grant: Grant,
}

/// Whether `presented` is `secret`, in time that depends on their lengths only (not on where they
/// first differ), so response times tell an attacker nothing about how much of a guess was right.
pub fn same_secret(presented: &str, secret: &str) -> bool {
    presented.as_bytes().ct_eq(secret.as_bytes()).into()
}

/// The public part of a token, which may be compared (and hashed) in variable time: its prefix and
/// its 8-character id (`ik_sdk_0a1b2c3d`, what a redacted token shows). Any other text has no
/// public part (`""`): such tokens all share one bucket, compared in constant time one by one.
fn public_part(token: &str) -> &str {
    [SDK_PREFIX, LIVE_PREFIX, ADMIN_PREFIX]
        .into_iter()
        .find_map(|prefix| {
            let rest = token.strip_prefix(prefix)?;
            let id = rest.get(..8)?;
            (rest.as_bytes().get(8) == Some(&b'_') && id.bytes().all(|b| b.is_ascii_alphanumeric()))
                .then(|| &token[..prefix.len() + 8])
        })
        .unwrap_or("")
}

/// Every token the platform accepts. Looked up by the token's public part only; the full texts
/// of the few tokens that share it are then compared in constant time, so how long a check takes
/// does not depend on how much of a stored secret a guess gets right.
#[derive(Default)]
pub struct TokenTable {
    by_public: HashMap<String, Vec<(String, Grant)>>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print full tokens, even in debug output.
        f.debug_struct("TokenTable")
            .field("len", &self.by_public.values().map(Vec::len).sum::<usize>())
            .finish()
    }
}

impl TokenTable {
    /// Registers (or re-registers) a token.
    pub fn insert(&mut self, token: String, grant: Grant) {
        let bucket = self
            .by_public
            .entry(public_part(&token).to_string())
            .or_default();
        match bucket.iter_mut().find(|(stored, _)| *stored == token) {
            Some((_, stored)) => *stored = grant,
            None => bucket.push((token, grant)),
        }
    }

    /// The grant of `token`, if known.
    pub fn get(&self, token: &str) -> Option<&Grant> {
        let bucket = self.by_public.get(public_part(token))?;
        // Every candidate is compared in full: no early exit on the first match either.
        bucket.iter().fold(None, |found, (stored, grant)| {
            if same_secret(token, stored) {
                Some(grant)
            } else {
                found
            }
        })
    }

    /// Keeps only the tokens for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Grant) -> bool) {
        for bucket in self.by_public.values_mut() {
            bucket.retain(|(token, grant)| keep(token, grant));
        }
        self.by_public.retain(|_, bucket| !bucket.is_empty());
    }

    /// All tokens, sorted for a stable persisted order.
    pub fn records(&self) -> Vec<TokenRecord> {
        let mut records: Vec<TokenRecord> = self
            .by_public
            .values()
            .flatten()
            .map(|(token, grant)| TokenRecord {
                token: token.clone(),
                grant: grant.clone(),
            })
            .collect();
        records.sort_by(|a, b| a.token.cmp(&b.token));
        records
    }

    /// The management grant of the request's bearer token: 401 when absent or unknown, 403
    /// `wrong_credential_type` for a data key.
    pub fn management(&self, headers: &HeaderMap) -> Result<(String, Vec<Scope>), ApiError> {
        match self.presented(headers)? {
            (_, Grant::Sdk { project, scopes }) => Ok((project.clone(), scopes.clone())),
            (token, Grant::Live { .. }) => Err(wrong_credential(
                token,
                "a data key; the management plane requires an ik_sdk_ token",
            )),
        }
    }

    /// The data-plane grant (project, workload) of the request's bearer token: 401 when absent
    /// or unknown, 403 `wrong_credential_type` for a management token.
    pub fn data(&self, headers: &HeaderMap) -> Result<(String, Option<String>), ApiError> {
        match self.presented(headers)? {
            (_, Grant::Live { project, workload }) => Ok((project.clone(), workload.clone())),
            (token, Grant::Sdk { .. }) => Err(wrong_credential(
                token,
                "a management token; the data plane requires an ik_live_ key",
            )),
        }
    }

    /// The request's bearer token and its grant: 401 when absent or unknown (both planes).
    fn presented<'a>(&self, headers: &'a HeaderMap) -> Result<(&'a str, &Grant), ApiError> {
        let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        let grant = self.get(token).ok_or_else(ApiError::unauthorized)?;
        Ok((token, grant))
    }
}

/// 403 `wrong_credential_type`: `token` (redacted) is the other plane's credential, `what` says which.
fn wrong_credential(token: &str, what: &str) -> ApiError {
    ApiError::forbidden(
        "wrong_credential_type",
        format!("{} is {what}", redact_token(token)),
    )
}

/// 403 `project_scope_mismatch` unless `granted` is `project`.
pub fn require_project(granted: &str, project: &str) -> Result<(), ApiError> {
    if granted == project {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "project_scope_mismatch",
            format!("token is not scoped to project \"{project}\""),
        ))
    }
}

/// 403 `scope_insufficient` unless `scopes` holds `needed`.
pub fn require_scope(scopes: &[Scope], needed: Scope) -> Result<(), ApiError> {
    if scopes.contains(&needed) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "scope_insufficient",
            format!("token lacks the \"{}\" scope", needed.as_str()),
        ))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("ik_sdk_1_abc", "ik_sdk_1_abc"));
        assert!(!same_secret("ik_sdk_1_abd", "ik_sdk_1_abc"));
        assert!(!same_secret("ik_sdk_1_ab", "ik_sdk_1_abc"));
        assert!(!same_secret("", "x"));
    }

    #[test]
    fn only_prefix_and_id_are_public() {
        let secret = "f".repeat(64);
        let token = format!("ik_live_0a1b2c3d_{secret}");
        assert_eq!(public_part(&token), "ik_live_0a1b2c3d");
        assert_eq!(public_part("ik_admin_0a1b2c3d_x"), "ik_admin_0a1b2c3d");
        for shapeless in [
            "ik_live_0a1b2c3dsecret",
            "ik_live_0a1b2c3",
            "ik_live_0a1b-c3d_x",
            "sk-0a1b2c3d_x",
            "",
            "ik_live_日本語日本_x",
        ] {
            assert_eq!(public_part(shapeless), "", "{shapeless}");
        }
    }

    #[test]
    fn table_finds_each_token_only_by_its_full_text() {
        let mut table = TokenTable::default();
        let live = |workload: &str| Grant::Live {
            project: "p".to_string(),
            workload: Some(workload.to_string()),
        };
        // Two tokens sharing an id, and one without the usual shape.
        let (a, b) = (
            format!("ik_live_00000000_{}", "a".repeat(64)),
            format!("ik_live_00000000_{}", "b".repeat(64)),
        );
        table.insert(a.clone(), live("a"));
        table.insert(b.clone(), live("b"));
        table.insert("odd-token".to_string(), live("odd"));
        assert_eq!(table.get(&a), Some(&live("a")));
        assert_eq!(table.get(&b), Some(&live("b")));
        assert_eq!(table.get("odd-token"), Some(&live("odd")));
        assert_eq!(
            table.get(&format!("ik_live_00000000_{}", "c".repeat(64))),
            None
        );
        assert_eq!(table.get(&a[..a.len() - 1]), None);
        assert_eq!(table.get("odd-toke"), None);
        table.insert(a.clone(), live("again"));
        assert_eq!(table.get(&a), Some(&live("again")));
        assert_eq!(table.records().len(), 3);
        table.retain(|token, _| token != b);
        assert_eq!(table.get(&b), None);
        assert_eq!(table.records().len(), 2);
    }

    #[test]
    fn bearer_parsing() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
