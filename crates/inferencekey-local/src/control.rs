//! The control plane (platform-wire section 2): list, create, patch, delete workloads and the
//! readiness event stream, with scope checks, body validation and slug de-duplication.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use serde_json::{json, Map, Value};

use crate::app::{App, RequestCtx};
use crate::auth::{require_project, require_scope, Scope};
use crate::clock::rfc3339_now;
use crate::faults::{preflight, tag, Fault, Route};
use crate::readiness::ReadinessEvents;
use crate::reply::{empty, json_response, ApiError, Params, Reply};
use crate::slug::canonical_slug;
use crate::sse::{stream_response, EventSource};
use crate::state::{NewWorkload, Workload};
use crate::sync::lock;

/// The 13 task types of the platform.
pub const TASK_TYPES: [&str; 13] = [
    "text2text",
    "embedding",
    "text2image",
    "text2video",
    "text2audio",
    "image2image",
    "image2video",
    "audio2text",
    "omni",
    "reranker",
    "classification",
    "reward",
    "forecast",
];

/// The execution policies of the platform.
const EXECUTION_POLICIES: [&str; 3] = ["fixed", "scheduled", "autoscaling"];

/// The fields a create or patch body sets; `None` = not sent (`Some(None)` = sent as null).
#[derive(Debug, Default)]
struct Fields {
    name: Option<String>,
    slug: Option<String>,
    model_name: Option<String>,
    backend: Option<String>,
    description: Option<Option<String>>,
    task_type: Option<String>,
    config: Option<Map<String, Value>>,
    execution_policy: Option<Option<String>>,
    execution_policy_config: Option<Option<Value>>,
    worker_id: Option<Option<String>>,
    gpu_resource_id: Option<Option<String>>,
}

impl Fields {
    /// Reads and type-checks the known fields of `body`; unknown fields are ignored.
    fn parse(body: &Map<String, Value>) -> Result<Self, ApiError> {
        let required = |key: &str| -> Result<Option<String>, ApiError> {
            match body.get(key) {
                None => Ok(None),
                Some(Value::String(text)) if !text.trim().is_empty() => Ok(Some(text.clone())),
                Some(Value::String(_)) => {
                    Err(ApiError::validation(format!("{key} must not be empty")))
                }
                Some(_) => Err(ApiError::validation(format!("{key} must be a string"))),
            }
        };
        let nullable = |key: &str| -> Result<Option<Option<String>>, ApiError> {
            match body.get(key) {
                None => Ok(None),
                Some(Value::Null) => Ok(Some(None)),
                Some(Value::String(text)) => Ok(Some(Some(text.clone()))),
                Some(_) => Err(ApiError::validation(format!(
                    "{key} must be a string or null"
                ))),
            }
        };
        let task_type = match body.get("task_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(task)) if TASK_TYPES.contains(&task.as_str()) => Some(task.clone()),
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "unknown task_type {other}; expected one of {}",
                    TASK_TYPES.join(", ")
                )))
            }
        };
        let execution_policy = nullable("execution_policy")?;
        if let Some(Some(policy)) = &execution_policy {
            if !EXECUTION_POLICIES.contains(&policy.as_str()) {
                return Err(ApiError::validation(format!(
                    "unknown execution_policy \"{policy}\"; expected one of {}",
                    EXECUTION_POLICIES.join(", ")
                )));
            }
        }
        let config = match body.get("config") {
            None | Some(Value::Null) => None,
            Some(Value::Object(config)) => Some(config.clone()),
            Some(_) => return Err(ApiError::validation("config must be an object")),
        };
        let execution_policy_config = match body.get("execution_policy_config") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(value @ Value::Object(_)) => Some(Some(value.clone())),
            Some(_) => {
                return Err(ApiError::validation(
                    "execution_policy_config must be an object or null",
                ))
            }
        };
        Ok(Self {
            name: required("name")?,
            slug: required("slug")?,
            model_name: required("model_name")?,
            backend: required("backend")?,
            description: nullable("description")?,
            task_type,
            config,
            execution_policy,
            execution_policy_config,
            worker_id: nullable("worker_id")?,
            gpu_resource_id: nullable("gpu_resource_id")?,
        })
    }

    /// Whether the body assigns a worker or GPU (needs `assignment:write`).
    fn sets_assignment(&self) -> bool {
        matches!(self.worker_id, Some(Some(_))) || matches!(self.gpu_resource_id, Some(Some(_)))
    }

    /// The workload to create: `name`, `slug`, `model_name`, `backend` are required.
    fn into_new(self) -> Result<NewWorkload, ApiError> {
        let missing = |key: &str| ApiError::validation(format!("{key} is required"));
        let raw_slug = self.slug.ok_or_else(|| missing("slug"))?;
        let slug = canonical_slug(&raw_slug);
        if slug.is_empty() {
            return Err(ApiError::validation(format!(
                "slug \"{raw_slug}\" has no letter or digit"
            )));
        }
        Ok(NewWorkload {
            name: self.name.ok_or_else(|| missing("name"))?,
            slug,
            model_name: self.model_name.ok_or_else(|| missing("model_name"))?,
            backend: self.backend.ok_or_else(|| missing("backend"))?,
            description: self.description.flatten(),
            task_type: self.task_type.unwrap_or_else(|| "text2text".to_string()),
            config: self.config.unwrap_or_default(),
            execution_policy: self.execution_policy.flatten(),
            execution_policy_config: self.execution_policy_config.flatten(),
            worker_id: self.worker_id.flatten(),
            gpu_resource_id: self.gpu_resource_id.flatten(),
        })
    }

    /// Applies the sent fields to `workload`; a change of what runs (model, backend, config,
    /// task type) sends it back through bootstrapping. Returns the updated wire object.
    fn apply(self, workload: &mut Workload) -> Value {
        fn set<T: PartialEq>(field: &mut T, value: Option<T>) -> bool {
            match value {
                Some(value) if *field != value => {
                    *field = value;
                    true
                }
                _ => false,
            }
        }
        let record = &mut workload.record;
        // Arrays, not `||`: every sent field must be applied, not just up to the first change.
        let runs_changed = [
            set(&mut record.model_name, self.model_name),
            set(&mut record.backend, self.backend),
            set(&mut record.config, self.config),
            set(&mut record.task_type, self.task_type),
        ]
        .contains(&true);
        let changed = [
            set(&mut record.name, self.name),
            set(&mut record.description, self.description),
            set(&mut record.execution_policy, self.execution_policy),
            set(
                &mut record.execution_policy_config,
                self.execution_policy_config,
            ),
            set(&mut record.worker_id, self.worker_id),
            set(&mut record.gpu_resource_id, self.gpu_resource_id),
        ]
        .contains(&true);
        if runs_changed || changed {
            record.updated_at = rfc3339_now();
        }
        let body = record.to_json();
        if runs_changed {
            workload.rebootstrap();
        }
        body
    }
}

/// The project and scopes of the request's `ik_sdk_` token.
fn management(app: &App, headers: &HeaderMap) -> Result<(String, Vec<Scope>), ApiError> {
    lock(&app.store).tokens.management(headers)
}

/// The scopes of the request's `ik_sdk_` token, once it is known to act on `project` and to hold
/// `needed`: the auth order of the routes under `/api/projects/{project}`.
fn project_access(
    app: &App,
    headers: &HeaderMap,
    project: &str,
    needed: Scope,
) -> Result<Vec<Scope>, ApiError> {
    let (granted, scopes) = management(app, headers)?;
    require_project(&granted, project)?;
    require_scope(&scopes, needed)?;
    Ok(scopes)
}

/// The fields of a create or patch body; assigning a worker or GPU also needs `assignment:write`.
fn sent_fields(ctx: &RequestCtx, scopes: &[Scope]) -> Result<Fields, ApiError> {
    let fields = Fields::parse(ctx.platform_object()?)?;
    if fields.sets_assignment() {
        require_scope(scopes, Scope::AssignmentWrite)?;
    }
    Ok(fields)
}

fn workload_not_found(what: &str) -> ApiError {
    ApiError::not_found(format!("workload {what} not found"))
}

/// C1 `GET /api/projects/{project}/workloads`.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Params(project): Params<String>,
) -> Reply {
    project_access(&app, &headers, &project, Scope::WorkloadRead)?;
    let fired = preflight(&app.faults, Route::List, None).await?;
    let workloads: Vec<Value> = lock(&app.store)
        .workloads_in(&project)
        .map(|w| w.record.to_json())
        .collect();
    let body = json!({ "workloads": workloads });
    Ok(tag(json_response(StatusCode::OK, &body), fired.as_ref()))
}

/// C2 `POST /api/projects/{project}/workloads`.
pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Params(project): Params<String>,
) -> Reply {
    let scopes = project_access(&app, &headers, &project, Scope::WorkloadWrite)?;
    let new = sent_fields(&ctx, &scopes)?.into_new()?;
    let fired = preflight(&app.faults, Route::Create, Some(&new.slug)).await?;
    let created = {
        let mut store = lock(&app.store);
        if matches!(fired, Some(ref f) if f.fault == Fault::RaceCreate {}) {
            // The twin a concurrent client "created first".
            store.create_workload(&project, new.clone());
        }
        store
            .create_workload(&project, new)
            .ok_or_else(|| ApiError::not_found(format!("project \"{project}\" not found")))?
    };
    // A workload a real engine serves starts it (its readiness is the engine's from now on).
    app.engines.reconcile(&app).await;
    Ok(tag(
        json_response(StatusCode::CREATED, &created),
        fired.as_ref(),
    ))
}

/// C3 `PATCH /api/workloads/{id}`.
pub async fn patch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Extension(ctx): Extension<Arc<RequestCtx>>,
    Params(id): Params<String>,
) -> Reply {
    let (granted, scopes) = management(&app, &headers)?;
    require_scope(&scopes, Scope::WorkloadWrite)?;
    let fields = sent_fields(&ctx, &scopes)?;
    let slug = owned_workload(&app, &id, &granted)?;
    if let Some(sent) = &fields.slug {
        if canonical_slug(sent) != slug {
            return Err(ApiError::validation("slug cannot be changed").into());
        }
    }
    let fired = preflight(&app.faults, Route::Patch, Some(&slug)).await?;
    let updated = lock(&app.store)
        .update_by_id(&id, |workload| fields.apply(workload))
        .ok_or_else(|| workload_not_found(&id))?;
    // A change of what runs restarts a real engine.
    app.engines.reconcile(&app).await;
    Ok(tag(json_response(StatusCode::OK, &updated), fired.as_ref()))
}

/// C4 `DELETE /api/workloads/{id}`.
pub async fn delete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Params(id): Params<String>,
) -> Reply {
    let (granted, scopes) = management(&app, &headers)?;
    require_scope(&scopes, Scope::WorkloadDelete)?;
    let slug = owned_workload(&app, &id, &granted)?;
    let fired = preflight(&app.faults, Route::Delete, Some(&slug)).await?;
    if !lock(&app.store).remove_workload(&id) {
        return Err(workload_not_found(&id).into());
    }
    // Its engine is stopped (or detached) before the answer.
    app.engines.reconcile(&app).await;
    Ok(tag(empty(StatusCode::NO_CONTENT), fired.as_ref()))
}

/// The slug of workload `id`: 404 if absent, 403 if it belongs to another project than `granted`.
fn owned_workload(app: &App, id: &str, granted: &str) -> Result<String, ApiError> {
    let store = lock(&app.store);
    let workload = store
        .workload_by_id(id)
        .ok_or_else(|| workload_not_found(id))?;
    require_project(granted, &workload.record.project_slug)?;
    Ok(workload.record.slug.clone())
}

/// C5 `GET /api/projects/{project}/workloads/{slug}/readiness-events`.
pub async fn readiness(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Params((project, slug)): Params<(String, String)>,
) -> Reply {
    project_access(&app, &headers, &project, Scope::WorkloadRead)?;
    let clock = lock(&app.store)
        .workload_by_slug(&project, &slug)
        .map(Workload::subscribe)
        .ok_or_else(|| workload_not_found(&format!("\"{slug}\"")))?;
    let fired = preflight(&app.faults, Route::Readiness, Some(&slug)).await?;
    let source = EventSource::Readiness(ReadinessEvents::new(clock));
    let fault = fired.as_ref().map(|f| f.fault.clone());
    Ok(tag(
        stream_response(source, fault, None, false),
        fired.as_ref(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn parse(body: Value) -> Result<Fields, ApiError> {
        Fields::parse(body.as_object().unwrap())
    }

    #[test]
    fn create_requires_the_four_fields() {
        let ok = json!({"name": "Bot", "slug": "Support Bot", "model_name": "m", "backend": "vllm",
                        "unknown": 1});
        let new = parse(ok.clone()).unwrap().into_new().unwrap();
        assert_eq!(
            (new.slug.as_str(), new.task_type.as_str()),
            ("support-bot", "text2text")
        );
        for key in ["name", "slug", "model_name", "backend"] {
            let mut body = ok.clone();
            body.as_object_mut().unwrap().remove(key);
            let message = parse(body).unwrap().into_new().unwrap_err().message;
            assert_eq!(message, format!("{key} is required"));
            let mut blank = ok.clone();
            blank[key] = json!("  ");
            assert_eq!(
                parse(blank).unwrap_err().message,
                format!("{key} must not be empty")
            );
            let mut wrong = ok.clone();
            wrong[key] = json!(5);
            assert!(parse(wrong).is_err());
        }
        let mut symbols = ok.clone();
        symbols["slug"] = json!("!!!");
        assert!(parse(symbols).unwrap().into_new().is_err());
    }

    #[test]
    fn enumerations_are_checked() {
        assert!(parse(json!({"task_type": "text2sql"})).is_err());
        assert!(parse(json!({"task_type": "reranker"})).is_ok());
        assert!(parse(json!({"execution_policy": "sometimes"})).is_err());
        assert!(parse(json!({"execution_policy": "autoscaling"})).is_ok());
        assert!(parse(json!({"config": [1]})).is_err());
        assert!(parse(json!({"execution_policy_config": 3})).is_err());
        assert!(parse(json!({"worker_id": 3})).is_err());
        assert!(parse(json!({"worker_id": "w1"})).unwrap().sets_assignment());
        assert!(!parse(json!({"worker_id": null})).unwrap().sets_assignment());
    }
}
