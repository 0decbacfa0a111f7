//! The admin API under `/_local/` (README "Admin API"): info, reset, projects, tokens, engine
//! settings, fault rules and the journal. Requests need the admin token and are not journaled.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use serde_json::{json, Value};

use crate::app::{App, RequestCtx};
use crate::auth::{bearer, same_secret, Grant, Scope};
use crate::real::{describe, EngineConfig};
use crate::reply::{empty, json_response, ApiError, Params, Reply};
use crate::slug::canonical_slug;
use crate::sync::lock;
use crate::token::{LIVE_PREFIX, SDK_PREFIX};

/// Whether the request carries the admin token (compared in constant time).
pub fn authorized(app: &App, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|token| same_secret(token, &app.info.admin_token))
}

/// `GET /_local/info`: the ready line object.
pub async fn info(State(app): State<Arc<App>>) -> Reply {
    let body = serde_json::to_value(&app.info).unwrap_or(Value::Null);
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /_local/reset`.
pub async fn reset(State(app): State<Arc<App>>) -> Reply {
    app.reset();
    // The workloads are gone: so are their engines.
    app.engines.reconcile(&app).await;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /_local/engines`: the real-engine settings in force.
pub async fn get_engines(State(app): State<Arc<App>>) -> Reply {
    Ok(json_response(
        StatusCode::OK,
        &describe(&app.engines.config()),
    ))
}

/// `PUT /_local/engines`: replaces the real-engine settings (README "Real engines"), then starts,
/// restarts or stops engines to match.
pub async fn put_engines(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Reply {
    let body = ctx.platform_object()?;
    let config: EngineConfig = serde_json::from_value(Value::Object(body.clone()))
        .map_err(|e| ApiError::validation(format!("engine settings: {e}")))?;
    config.validate().map_err(ApiError::validation)?;
    app.engines.set_config(config);
    app.engines.reconcile(&app).await;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /_local/projects` `{"slug"}`.
pub async fn add_project(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Reply {
    let body = ctx.platform_object()?;
    let raw = body
        .get("slug")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::validation("slug must be a string"))?;
    let slug = canonical_slug(raw);
    if slug.is_empty() {
        return Err(ApiError::validation(format!("slug \"{raw}\" has no letter or digit")).into());
    }
    let project = lock(&app.store)
        .add_project(&slug)
        .ok_or_else(|| ApiError::conflict(format!("project \"{slug}\" already exists")))?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"slug": project.slug, "id": project.id}),
    ))
}

/// `POST /_local/tokens`: `{"kind": "sdk", "project", "scopes"}` or
/// `{"kind": "live", "project", "workload"}`; `project` defaults to the default project.
pub async fn add_token(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Reply {
    let body = ctx.platform_object()?;
    let project = match body.get("project") {
        None | Some(Value::Null) => app.info.project.clone(),
        Some(Value::String(project)) => project.clone(),
        Some(_) => return Err(ApiError::validation("project must be a string").into()),
    };
    let (prefix, grant) = match body.get("kind").and_then(Value::as_str) {
        Some("sdk") => {
            let scopes = match body.get("scopes") {
                None | Some(Value::Null) => Scope::ALL.to_vec(),
                Some(Value::Array(names)) => names
                    .iter()
                    .map(|name| {
                        name.as_str().and_then(Scope::parse).ok_or_else(|| {
                            ApiError::validation(format!(
                                "unknown scope {name}; expected workload:read, workload:write, \
                                 workload:delete or assignment:write"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => return Err(ApiError::validation("scopes must be a list").into()),
            };
            (SDK_PREFIX, Grant::Sdk { project, scopes })
        }
        Some("live") => {
            let workload = match body.get("workload") {
                None | Some(Value::Null) => None,
                Some(Value::String(slug)) => Some(canonical_slug(slug)),
                Some(_) => return Err(ApiError::validation("workload must be a string").into()),
            };
            (LIVE_PREFIX, Grant::Live { project, workload })
        }
        _ => return Err(ApiError::validation("kind must be \"sdk\" or \"live\"").into()),
    };
    let mut store = lock(&app.store);
    if store.project(grant.project()).is_none() {
        return Err(
            ApiError::not_found(format!("project \"{}\" not found", grant.project())).into(),
        );
    }
    let token = store
        .add_token(prefix, grant)
        .map_err(|e| ApiError::internal(format!("cannot mint a token: {e}")))?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "token": token }),
    ))
}

/// `PUT /_local/defaults`: engine settings for workloads created afterwards.
pub async fn put_defaults(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Reply {
    let body = ctx.json.clone().map_err(ApiError::validation)?;
    let mut store = lock(&app.store);
    let mut defaults = store.defaults().clone();
    defaults.apply(&body).map_err(ApiError::validation)?;
    store.set_defaults(defaults);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `PUT /_local/projects/{project}/workloads/{slug}/settings`; a `readiness` restarts the
/// workload's readiness at `scheduling`.
pub async fn put_settings(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Params((project, slug)): Params<(String, String)>,
) -> Reply {
    let body = ctx.json.clone().map_err(ApiError::validation)?;
    lock(&app.store)
        .update_by_slug(&project, &slug, |workload| {
            let readiness_given = workload.settings.apply(&body)?;
            if readiness_given {
                workload.restart_readiness();
            }
            Ok::<(), String>(())
        })
        .ok_or_else(|| not_found(&project, &slug))?
        .map_err(ApiError::validation)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /_local/projects/{project}/workloads/{slug}/settings`.
pub async fn get_settings(
    State(app): State<Arc<App>>,
    Params((project, slug)): Params<(String, String)>,
) -> Reply {
    let store = lock(&app.store);
    let workload = store
        .workload_by_slug(&project, &slug)
        .ok_or_else(|| not_found(&project, &slug))?;
    let body = serde_json::to_value(&workload.settings).unwrap_or(Value::Null);
    Ok(json_response(StatusCode::OK, &body))
}

fn not_found(project: &str, slug: &str) -> ApiError {
    ApiError::not_found(format!(
        "workload \"{slug}\" not found in project \"{project}\""
    ))
}

/// `POST /_local/faults`: 201 `{"id"}`.
pub async fn add_fault(
    State(app): State<Arc<App>>,
    Extension(ctx): Extension<Arc<RequestCtx>>,
) -> Reply {
    let body = ctx.json.clone().map_err(ApiError::validation)?;
    let id = lock(&app.faults).add(&body).map_err(ApiError::validation)?;
    Ok(json_response(StatusCode::CREATED, &json!({ "id": id })))
}

/// `GET /_local/faults`: the rules with their `fired` counts.
pub async fn list_faults(State(app): State<Arc<App>>) -> Reply {
    let rules = lock(&app.faults).list();
    Ok(json_response(StatusCode::OK, &rules))
}

/// `DELETE /_local/faults`.
pub async fn clear_faults(State(app): State<Arc<App>>) -> Reply {
    lock(&app.faults).clear();
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /_local/journal`: entries oldest first.
pub async fn journal(State(app): State<Arc<App>>) -> Reply {
    let entries = lock(&app.journal).entries();
    let body = serde_json::to_value(entries).unwrap_or(Value::Null);
    Ok(json_response(StatusCode::OK, &body))
}

/// `DELETE /_local/journal`.
pub async fn clear_journal(State(app): State<Arc<App>>) -> Reply {
    lock(&app.journal).clear();
    Ok(empty(StatusCode::NO_CONTENT))
}
