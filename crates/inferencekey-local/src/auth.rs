//! Credentials: the token table with each token's grant (project, scopes, workload) and the
//! checks of both planes.

use std::collections::HashMap;
use std::fmt;

use axum::http::{header, HeaderMap};
use serde::{Deserialize, Serialize};

use crate::reply::ApiError;
use crate::token::redact_token;

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

/// Every token the platform accepts, by full token text.
#[derive(Default)]
pub struct TokenTable {
    by_token: HashMap<String, Grant>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print full tokens, even in debug output.
        f.debug_struct("TokenTable")
            .field("len", &self.by_token.len())
            .finish()
    }
}

impl TokenTable {
    /// Registers (or re-registers) a token.
    pub fn insert(&mut self, token: String, grant: Grant) {
        self.by_token.insert(token, grant);
    }

    /// The grant of `token`, if known.
    pub fn get(&self, token: &str) -> Option<&Grant> {
        self.by_token.get(token)
    }

    /// Keeps only the tokens for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Grant) -> bool) {
        self.by_token.retain(|token, grant| keep(token, grant));
    }

    /// All tokens, sorted for a stable persisted order.
    pub fn records(&self) -> Vec<TokenRecord> {
        let mut records: Vec<TokenRecord> = self
            .by_token
            .iter()
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
    fn bearer_parsing() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
