//! The platform's state: projects, tokens, workloads (wire record, engine settings, readiness
//! clock) and default settings, in memory, written through atomically to `--state-dir` if set.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::auth::{Grant, Scope, TokenRecord, TokenTable};
use crate::clock::rfc3339_now;
use crate::config::{Config, ReadyTokens};
use crate::error::LocalError;
use crate::readiness::{ReadinessClock, Stage};
use crate::rng::{mix64, SplitMix64};
use crate::settings::EngineSettings;
use crate::token::{mint, mint_random};

/// Version of the state file layout.
const STATE_VERSION: u32 = 1;
/// Name of the state file inside `--state-dir`.
const STATE_FILE: &str = "state.json";
/// Name of the lock file inside `--state-dir`: one platform at a time writes a directory.
const LOCK_FILE: &str = "state.lock";
/// Separates the id generator's stream from the other seeded streams.
const IDS_STREAM: u64 = 0x6964_735f_7374_7265;

/// A project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Slug (in URLs).
    pub slug: String,
    /// Server id (`proj_...`).
    pub id: String,
}

/// The workload object of platform-wire section 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// `wl_` + 26 lowercase alphanumerics.
    pub id: String,
    /// The project's id.
    pub project_id: String,
    /// The project's slug.
    pub project_slug: String,
    /// Display name.
    pub name: String,
    /// Canonical, unique slug within the project.
    pub slug: String,
    /// Description.
    pub description: Option<String>,
    /// One of the 13 platform task types.
    pub task_type: String,
    /// Backend wire string.
    pub backend: String,
    /// Model.
    pub model_name: String,
    /// Engine configuration as sent.
    pub config: Map<String, Value>,
    /// `fixed` / `scheduled` / `autoscaling`.
    pub execution_policy: Option<String>,
    /// Passed through.
    pub execution_policy_config: Option<Value>,
    /// Worker assignment.
    pub worker_id: Option<String>,
    /// GPU assignment.
    pub gpu_resource_id: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
}

impl WorkloadRecord {
    /// The wire object, keys in the order of the spec.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "project_id": self.project_id,
            "project_slug": self.project_slug,
            "name": self.name,
            "slug": self.slug,
            "workload_slug": self.slug,
            "description": self.description,
            "task_type": self.task_type,
            "backend": self.backend,
            "model_name": self.model_name,
            "config": self.config,
            "execution_policy": self.execution_policy,
            "execution_policy_config": self.execution_policy_config,
            "worker_id": self.worker_id,
            "gpu_resource_id": self.gpu_resource_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// The fields of a workload to create (validated, slug canonical).
#[derive(Debug, Clone, PartialEq)]
pub struct NewWorkload {
    /// Display name.
    pub name: String,
    /// Canonical slug asked for (de-duplicated on insert).
    pub slug: String,
    /// Description.
    pub description: Option<String>,
    /// Task type.
    pub task_type: String,
    /// Backend.
    pub backend: String,
    /// Model.
    pub model_name: String,
    /// Config.
    pub config: Map<String, Value>,
    /// Execution policy.
    pub execution_policy: Option<String>,
    /// Execution policy config.
    pub execution_policy_config: Option<Value>,
    /// Worker.
    pub worker_id: Option<String>,
    /// GPU.
    pub gpu_resource_id: Option<String>,
}

/// A workload: its wire record, its engine settings and its readiness clock.
#[derive(Debug)]
pub struct Workload {
    /// The wire object.
    pub record: WorkloadRecord,
    /// Engine settings in force.
    pub settings: EngineSettings,
    clock: watch::Sender<ReadinessClock>,
}

impl Workload {
    fn new(record: WorkloadRecord, settings: EngineSettings) -> Self {
        let clock = ReadinessClock::start(
            settings.readiness,
            &settings.error_message,
            &record.model_name,
        );
        Self {
            record,
            settings,
            clock: watch::Sender::new(clock),
        }
    }

    /// Follows the readiness clock (the readiness stream ends when the workload goes away).
    pub fn subscribe(&self) -> watch::Receiver<ReadinessClock> {
        self.clock.subscribe()
    }

    /// The readiness stage in force now.
    pub fn readiness_now(&self) -> Stage {
        self.clock.borrow().current(Instant::now()).1
    }

    /// Restarts readiness at `scheduling` under the current settings.
    pub fn restart_readiness(&self) {
        let settings = &self.settings;
        let model = &self.record.model_name;
        self.clock.send_modify(|clock| {
            *clock = clock.restarted(settings.readiness, &settings.error_message, model);
        });
    }

    /// Whether a real engine drives the readiness now.
    pub fn readiness_is_live(&self) -> bool {
        self.clock.borrow().is_live()
    }

    /// Whether a real engine drove the readiness before its last restart (a PATCH).
    pub fn readiness_was_live(&self) -> bool {
        self.clock.borrow().previous_was_live()
    }

    /// A real engine's readiness starts over at `stage` (now).
    pub fn live_start(&self, stage: Stage) {
        self.clock
            .send_modify(|clock| *clock = clock.live_started(stage));
    }

    /// A real engine reached `stage` (now); the same stage again is not repeated.
    pub fn live_push(&self, stage: Stage) {
        self.clock.send_if_modified(|clock| {
            let now = clock.current(std::time::Instant::now()).1;
            let same = clock.is_live()
                && now.phase == stage.phase
                && now.step == stage.step
                && now.message == stage.message;
            if !same {
                *clock = clock.live_pushed(stage);
            }
            !same
        });
    }

    /// Sends the workload back through `bootstrapping` (what runs has changed).
    pub fn rebootstrap(&self) {
        let model = &self.record.model_name;
        self.clock
            .send_modify(|clock| *clock = clock.rebootstrapped(model));
    }
}

#[derive(Serialize, Deserialize)]
struct StoredWorkload {
    #[serde(flatten)]
    record: WorkloadRecord,
    settings: EngineSettings,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    ids_state: u64,
    projects: Vec<Project>,
    tokens: Vec<TokenRecord>,
    workloads: Vec<StoredWorkload>,
    defaults: EngineSettings,
    /// The ready-line tokens of the run that wrote the file, reused by a run without a seed
    /// (absent from files of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ready: Option<ReadyTokens>,
}

/// Writes `bytes` to a new `path` readable by the owner only (the state holds full tokens), and
/// flushes it to disk, so the rename that follows never exposes a partial file. On Unix the file
/// is created 0600; on Windows it takes the directory's access list, which under the user's
/// profile (where a state directory belongs) already admits only the user.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut out = options.open(path)?;
    out.write_all(bytes)?;
    out.sync_all()
}

/// A temp file name next to `file` that no other writer uses (the pid and a process-wide count),
/// so a write never lands in another's half-written temp file.
fn temp_path(file: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    file.with_extension(format!("json.{}-{write}.tmp", std::process::id()))
}

/// Moves `temp` over `file`, atomically: readers see the old state or the new, never a mix.
/// Windows refuses to replace a file that another process holds open without delete sharing (a
/// reader, the search indexer, an antivirus scan: usually for milliseconds), so there a refused
/// rename is retried for up to about a tenth of a second.
fn replace(temp: &Path, file: &Path) -> std::io::Result<()> {
    #[cfg(windows)]
    {
        const ERROR_ACCESS_DENIED: i32 = 5;
        const ERROR_SHARING_VIOLATION: i32 = 32;
        const ATTEMPTS: u32 = 10;
        let mut attempt = 1;
        loop {
            match std::fs::rename(temp, file) {
                Err(error)
                    if attempt < ATTEMPTS
                        && matches!(
                            error.raw_os_error(),
                            Some(ERROR_ACCESS_DENIED | ERROR_SHARING_VIOLATION)
                        ) =>
                {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                renamed => return renamed,
            }
        }
    }
    #[cfg(not(windows))]
    std::fs::rename(temp, file)
}

/// The exclusive lock of a state directory, held by one platform for its lifetime: a second one
/// would silently overwrite the first one's writes. An advisory lock on `DIR/state.lock` (`flock`
/// on Unix, `LockFileEx` on Windows), released when dropped, and by the operating system when the
/// process dies, so a crash leaves no stale lock. The file stays; it holds the holder's pid.
#[derive(Debug)]
pub struct StateLock {
    file: std::fs::File,
}

impl StateLock {
    /// Locks `dir` (created if need be); [`LocalError::StateDirInUse`] if another platform, in
    /// this process or another, holds it.
    pub fn acquire(dir: &Path) -> Result<Self, LocalError> {
        use std::io::{Read as _, Seek as _, Write as _};
        std::fs::create_dir_all(dir).map_err(|e| LocalError::state(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LocalError::state(&path, e))?;
        // Called as a trait function: std's own `File::try_lock` (Rust 1.89) would shadow it.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                // The holder wrote its pid; Windows forbids reading a locked range: no pid then.
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LocalError::StateDirInUse {
                    dir: dir.to_path_buf(),
                    pid,
                });
            }
            Err(fs4::TryLockError::Error(error)) => {
                return Err(LocalError::state(&path, format!("cannot lock: {error}")));
            }
        }
        // Best effort: the pid only makes the next one's message more helpful.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        Ok(Self { file })
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first says so explicitly.
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

/// All platform state.
#[derive(Debug)]
pub struct Store {
    default_project: String,
    ready: ReadyTokens,
    projects: Vec<Project>,
    /// Every accepted token.
    pub tokens: TokenTable,
    workloads: Vec<Workload>,
    defaults: EngineSettings,
    ids: SplitMix64,
    /// Whether new tokens come from the ids generator (an explicit seed) or the OS.
    seeded_tokens: bool,
    state_file: Option<PathBuf>,
}

impl Store {
    /// The state for `config`: loaded from its state directory when there is one, with the
    /// default project and the ready-line tokens always present. The ready-line tokens derive
    /// from an explicit seed; without one they are those of the state file, else random.
    pub fn open(config: &Config) -> Result<Self, LocalError> {
        let mut store = Self {
            default_project: config.project.clone(),
            ready: ReadyTokens::derive(config.engine_seed()),
            projects: Vec::new(),
            tokens: TokenTable::default(),
            workloads: Vec::new(),
            defaults: EngineSettings::default(),
            ids: SplitMix64::new(mix64(config.engine_seed() ^ IDS_STREAM)),
            seeded_tokens: config.seed.is_some(),
            state_file: None,
        };
        let mut stored_ready = None;
        if let Some(dir) = &config.state_dir {
            std::fs::create_dir_all(dir).map_err(|e| LocalError::state(dir, e))?;
            let file = dir.join(STATE_FILE);
            if file.exists() {
                stored_ready = store.load(&file)?;
            }
            store.state_file = Some(file);
        }
        if config.seed.is_none() {
            store.ready = match stored_ready {
                Some(ready) => ready,
                None => ReadyTokens::random()?,
            };
        }
        store.ensure_defaults();
        store.save();
        Ok(store)
    }

    /// The ready-line tokens.
    pub fn ready(&self) -> &ReadyTokens {
        &self.ready
    }

    /// Loads the state file; returns the ready-line tokens it holds, if any.
    fn load(&mut self, file: &Path) -> Result<Option<ReadyTokens>, LocalError> {
        let text = std::fs::read_to_string(file).map_err(|e| LocalError::state(file, e))?;
        let snapshot: Snapshot =
            serde_json::from_str(&text).map_err(|e| LocalError::state(file, e))?;
        if snapshot.version != STATE_VERSION {
            return Err(LocalError::state(
                file,
                format!("unsupported state version {}", snapshot.version),
            ));
        }
        self.ids = SplitMix64::new(snapshot.ids_state);
        self.projects = snapshot.projects;
        for record in snapshot.tokens {
            self.tokens.insert(record.token, record.grant);
        }
        // A restart re-provisions: each workload's readiness clock starts again now.
        self.workloads = snapshot
            .workloads
            .into_iter()
            .map(|stored| Workload::new(stored.record, stored.settings))
            .collect();
        self.defaults = snapshot.defaults;
        Ok(snapshot.ready)
    }

    fn ensure_defaults(&mut self) {
        if self.project(&self.default_project).is_none() {
            let project = Project {
                slug: self.default_project.clone(),
                id: self.new_id("proj_"),
            };
            self.projects.push(project);
        }
        let project = self.default_project.clone();
        self.tokens.insert(
            self.ready.sdk.clone(),
            Grant::Sdk {
                project: project.clone(),
                scopes: Scope::ALL.to_vec(),
            },
        );
        self.tokens.insert(
            self.ready.live.clone(),
            Grant::Live {
                project,
                workload: None,
            },
        );
    }

    /// Writes the state file atomically (temp file + rename), when there is a state directory.
    /// A failure is logged, not fatal: the in-memory state stays authoritative.
    pub fn save(&self) {
        let Some(file) = &self.state_file else {
            return;
        };
        let snapshot = Snapshot {
            version: STATE_VERSION,
            ids_state: self.ids.state(),
            projects: self.projects.clone(),
            tokens: self.tokens.records(),
            workloads: self
                .workloads
                .iter()
                .map(|w| StoredWorkload {
                    record: w.record.clone(),
                    settings: w.settings.clone(),
                })
                .collect(),
            defaults: self.defaults.clone(),
            ready: Some(self.ready.clone()),
        };
        let temp = temp_path(file);
        let written = serde_json::to_vec_pretty(&snapshot)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_private(&temp, &bytes))
            .and_then(|()| replace(&temp, file));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temp);
            log::warn!("cannot write state file {}: {error}", file.display());
            return;
        }
        // Make the rename itself durable (best effort). Only Unix can open a directory to sync it;
        // Windows makes a rename durable with the file system's own journal.
        #[cfg(unix)]
        if let Some(dir) = file.parent() {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
    }

    /// Back to a fresh platform: only the default project and the ready-line tokens remain.
    pub fn reset(&mut self) {
        self.workloads.clear();
        let default = self.default_project.clone();
        self.projects.retain(|p| p.slug == default);
        let ready = self.ready.clone();
        self.tokens
            .retain(|token, _| token == ready.sdk || token == ready.live);
        self.defaults = EngineSettings::default();
        self.ensure_defaults();
        self.save();
    }

    /// A new id: `prefix` + 26 lowercase alphanumerics.
    pub fn new_id(&mut self, prefix: &str) -> String {
        format!("{prefix}{}", self.ids.base36(26))
    }

    /// A new token with the given prefix, registered with `grant`: from the seeded generator under
    /// an explicit seed, else from the operating system's random generator (an error only if that
    /// cannot be read).
    pub fn add_token(&mut self, prefix: &str, grant: Grant) -> Result<String, getrandom::Error> {
        let token = if self.seeded_tokens {
            mint(prefix, &mut self.ids)
        } else {
            mint_random(prefix)?
        };
        self.tokens.insert(token.clone(), grant);
        self.save();
        Ok(token)
    }

    /// The project `slug`.
    pub fn project(&self, slug: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.slug == slug)
    }

    /// Creates project `slug` (canonical); `None` if it exists.
    pub fn add_project(&mut self, slug: &str) -> Option<Project> {
        if self.project(slug).is_some() {
            return None;
        }
        let project = Project {
            slug: slug.to_string(),
            id: self.new_id("proj_"),
        };
        self.projects.push(project.clone());
        self.save();
        Some(project)
    }

    /// Default engine settings for new workloads.
    pub fn defaults(&self) -> &EngineSettings {
        &self.defaults
    }

    /// Replaces the default engine settings.
    pub fn set_defaults(&mut self, defaults: EngineSettings) {
        self.defaults = defaults;
        self.save();
    }

    /// The workloads of `project`, in creation order.
    pub fn workloads_in<'a>(&'a self, project: &'a str) -> impl Iterator<Item = &'a Workload> {
        self.workloads
            .iter()
            .filter(move |w| w.record.project_slug == project)
    }

    /// Every workload, in creation order.
    pub fn all_workloads(&self) -> impl Iterator<Item = &Workload> {
        self.workloads.iter()
    }

    /// The workload with server id `id`.
    pub fn workload_by_id(&self, id: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.record.id == id)
    }

    /// The workload `slug` of `project`.
    pub fn workload_by_slug(&self, project: &str, slug: &str) -> Option<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.record.project_slug == project && w.record.slug == slug)
    }

    /// Creates a workload in `project` under the first free slug among `slug`, `slug-1`,
    /// `slug-2`, ...; returns its wire object (`None` if the project does not exist).
    pub fn create_workload(&mut self, project: &str, new: NewWorkload) -> Option<Value> {
        let project_id = self.project(project)?.id.clone();
        let slug = (0u64..)
            .map(|n| match n {
                0 => new.slug.clone(),
                n => format!("{}-{n}", new.slug),
            })
            .find(|candidate| self.workload_by_slug(project, candidate).is_none())?;
        let now = rfc3339_now();
        let record = WorkloadRecord {
            id: self.new_id("wl_"),
            project_id,
            project_slug: project.to_string(),
            name: new.name,
            slug,
            description: new.description,
            task_type: new.task_type,
            backend: new.backend,
            model_name: new.model_name,
            config: new.config,
            execution_policy: new.execution_policy,
            execution_policy_config: new.execution_policy_config,
            worker_id: new.worker_id,
            gpu_resource_id: new.gpu_resource_id,
            created_at: now.clone(),
            updated_at: now,
        };
        let body = record.to_json();
        self.workloads
            .push(Workload::new(record, self.defaults.clone()));
        self.save();
        Some(body)
    }

    /// Runs `change` on the workload with id `id`, then saves; `None` if there is none.
    pub fn update_by_id<R>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Workload) -> R,
    ) -> Option<R> {
        let workload = self.workloads.iter_mut().find(|w| w.record.id == id)?;
        let result = change(workload);
        self.save();
        Some(result)
    }

    /// Runs `change` on workload `slug` of `project`, then saves; `None` if there is none.
    pub fn update_by_slug<R>(
        &mut self,
        project: &str,
        slug: &str,
        change: impl FnOnce(&mut Workload) -> R,
    ) -> Option<R> {
        let id = self.workload_by_slug(project, slug)?.record.id.clone();
        self.update_by_id(&id, change)
    }

    /// Deletes the workload with id `id`; whether it existed.
    pub fn remove_workload(&mut self, id: &str) -> bool {
        let before = self.workloads.len();
        self.workloads.retain(|w| w.record.id != id);
        let removed = self.workloads.len() != before;
        if removed {
            self.save();
        }
        removed
    }
}
