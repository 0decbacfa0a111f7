//! The readiness engine: each workload's phase timeline per profile, on its own clock, and the
//! live event source behind the readiness SSE route (snapshot on connect, then each transition).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::event::SseEvent;

/// How a workload goes through readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Ready at once.
    Immediate,
    /// Every phase and bootstrapping step, ready after about 300 ms.
    Fast,
    /// Every phase and step over about five seconds.
    Realistic,
    /// Never leaves `provisioning`.
    Stuck,
    /// Fails in `bootstrapping` with the workload's `error_message`.
    Error,
    /// Reaches `ready`, drops back to `bootstrapping`, and again, every 300 ms.
    Flapping,
}

impl Profile {
    /// The accepted names, for error messages.
    pub const NAMES: &'static str = "immediate, fast, realistic, stuck, error, flapping";

    /// The profile named `name`, if any.
    pub fn parse(name: &str) -> Option<Profile> {
        match name {
            "immediate" => Some(Profile::Immediate),
            "fast" => Some(Profile::Fast),
            "realistic" => Some(Profile::Realistic),
            "stuck" => Some(Profile::Stuck),
            "error" => Some(Profile::Error),
            "flapping" => Some(Profile::Flapping),
            _ => None,
        }
    }
}

/// A readiness phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for capacity.
    Scheduling,
    /// Starting the machine / container.
    Provisioning,
    /// Pulling, downloading and loading.
    Bootstrapping,
    /// Serving (terminal).
    Ready,
    /// Failed (terminal).
    Error,
}

impl Phase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Scheduling => "scheduling",
            Phase::Provisioning => "provisioning",
            Phase::Bootstrapping => "bootstrapping",
            Phase::Ready => "ready",
            Phase::Error => "error",
        }
    }

    /// `ready` and `error` end a readiness stream.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Ready | Phase::Error)
    }
}

/// One point of a timeline: from `at_ms` on the clock, the workload is in this phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Offset from the clock's start.
    pub at_ms: u64,
    /// The phase.
    pub phase: Phase,
    /// The bootstrapping step, if any.
    pub step: Option<&'static str>,
    /// Human-readable progress message.
    pub message: String,
}

/// Step times of the profiles that go through every phase: provisioning, image_pull,
/// model_download, model_load, end (ready or error).
const FAST_TIMES: [u64; 5] = [40, 80, 150, 220, 300];
const REALISTIC_TIMES: [u64; 5] = [600, 1200, 2200, 3600, 5000];
/// Half-period of the flapping profile.
const FLAP_MS: u64 = 300;
/// How many replaced timelines a clock remembers, so a watcher that wakes late can still send
/// what happened on them before they were replaced.
const HISTORY: usize = 16;

/// A workload's readiness clock: its profile, the instant it (re)started, and from where.
#[derive(Debug, Clone)]
pub struct ReadinessClock {
    profile: Profile,
    error_message: String,
    model: String,
    epoch: Instant,
    from_bootstrapping: bool,
    generation: u64,
    /// The timeline this one replaced (bounded to `HISTORY` links).
    previous: Option<Arc<ReadinessClock>>,
    /// A real engine's timeline: the stages observed so far, appended as they happen, instead
    /// of the profile's.
    live: Option<Arc<Vec<Stage>>>,
}

impl ReadinessClock {
    /// A clock starting now at `scheduling`.
    pub fn start(profile: Profile, error_message: &str, model: &str) -> Self {
        Self {
            profile,
            error_message: error_message.to_string(),
            model: model.to_string(),
            epoch: Instant::now(),
            from_bootstrapping: false,
            generation: 0,
            previous: None,
            live: None,
        }
    }

    /// This clock replaced now by a real engine's timeline, starting with `first` (at 0).
    pub fn live_started(&self, first: Stage) -> Self {
        Self {
            epoch: Instant::now(),
            from_bootstrapping: false,
            generation: self.generation + 1,
            previous: Some(self.remembered()),
            live: Some(Arc::new(vec![Stage { at_ms: 0, ..first }])),
            ..self.clone()
        }
    }

    /// Appends a stage observed now to a real engine's timeline (the same generation, so a
    /// watcher sends it next); on a profile's clock it starts a live timeline.
    pub fn live_pushed(&self, stage: Stage) -> Self {
        let Some(live) = &self.live else {
            return self.live_started(stage);
        };
        let mut stages = live.as_ref().clone();
        let at_ms = self
            .elapsed_ms(Instant::now())
            .max(stages.last().map_or(0, |last| last.at_ms));
        stages.push(Stage { at_ms, ..stage });
        Self {
            live: Some(Arc::new(stages)),
            ..self.clone()
        }
    }

    /// Whether a real engine drove the timeline this one replaced.
    pub fn previous_was_live(&self) -> bool {
        self.previous.as_ref().is_some_and(|p| p.is_live())
    }

    /// Whether a real engine drives this clock.
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// This clock restarted now at `scheduling`, with a new profile and settings.
    pub fn restarted(&self, profile: Profile, error_message: &str, model: &str) -> Self {
        Self {
            generation: self.generation + 1,
            previous: Some(self.remembered()),
            ..Self::start(profile, error_message, model)
        }
    }

    /// This clock sent back through `bootstrapping` now (what runs has changed).
    pub fn rebootstrapped(&self, model: &str) -> Self {
        Self {
            model: model.to_string(),
            epoch: Instant::now(),
            from_bootstrapping: true,
            generation: self.generation + 1,
            previous: Some(self.remembered()),
            live: None,
            ..self.clone()
        }
    }

    /// This clock as a link of a successor's history, with the history cut to `HISTORY` links.
    fn remembered(&self) -> Arc<ReadinessClock> {
        let mut links = Vec::new();
        let mut link = Some(self);
        while let Some(clock) = link {
            if links.len() == HISTORY {
                break;
            }
            links.push(clock);
            link = clock.previous.as_deref();
        }
        let mut chain: Option<Arc<ReadinessClock>> = None;
        for clock in links.into_iter().rev() {
            chain = Some(Arc::new(ReadinessClock {
                previous: chain,
                ..clock.clone()
            }));
        }
        // `links` holds at least `self`, so the chain is never empty here.
        chain.unwrap_or_else(|| Arc::new(self.clone()))
    }

    /// The timeline that replaced generation `generation`, from this clock's history: this clock
    /// itself or one it remembers. `None` when it is older than the history reaches.
    fn successor_of(&self, generation: u64) -> Option<&ReadinessClock> {
        let mut clock = self;
        loop {
            let previous = clock.previous.as_deref()?;
            if previous.generation == generation {
                return Some(clock);
            }
            clock = previous;
        }
    }

    /// The instant this clock's timeline began.
    fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The stage in force at `now`, with its index.
    pub fn current(&self, now: Instant) -> (usize, Stage) {
        let elapsed = self.elapsed_ms(now);
        let mut index = 0;
        let mut stage = self.stage(0).unwrap_or_else(|| self.ready_stage(0));
        while let Some(next) = self.stage(index + 1) {
            if next.at_ms > elapsed {
                break;
            }
            index += 1;
            stage = next;
        }
        (index, stage)
    }

    /// When the stage after `index` begins, if there is one.
    pub fn next_transition(&self, index: usize) -> Option<Instant> {
        self.stage(index + 1)
            .map(|stage| self.epoch + Duration::from_millis(stage.at_ms))
    }

    /// Milliseconds since the clock (re)started.
    pub fn elapsed_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts restarts, so a watcher can tell a new timeline from the old one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The `index`-th stage of this clock's timeline (unbounded for `flapping`).
    fn stage(&self, index: usize) -> Option<Stage> {
        if let Some(live) = &self.live {
            return live.get(index).cloned();
        }
        let base = self.base_timeline();
        if let Some(stage) = base.get(index) {
            return Some(stage.clone());
        }
        if self.profile != Profile::Flapping {
            return None;
        }
        let last_at = base.last().map_or(0, |stage| stage.at_ms);
        let k = u64::try_from(index - base.len()).unwrap_or(u64::MAX);
        let at_ms = last_at.saturating_add(FLAP_MS.saturating_mul(k + 1));
        Some(if k % 2 == 0 {
            Stage {
                at_ms,
                phase: Phase::Bootstrapping,
                step: Some("model_load"),
                message: format!("engine restarted; reloading {}", self.model),
            }
        } else {
            self.ready_stage(at_ms)
        })
    }

    /// The profile's timeline from `scheduling`, or from the first `bootstrapping` stage (shifted
    /// to start at 0) after a change of what runs.
    fn base_timeline(&self) -> Vec<Stage> {
        let full = self.full_timeline();
        if !self.from_bootstrapping {
            return full;
        }
        match full.iter().position(|s| s.phase == Phase::Bootstrapping) {
            Some(first) => {
                let shift = full[first].at_ms;
                full[first..]
                    .iter()
                    .map(|s| Stage {
                        at_ms: s.at_ms - shift,
                        ..s.clone()
                    })
                    .collect()
            }
            None => full,
        }
    }

    fn full_timeline(&self) -> Vec<Stage> {
        let times = match self.profile {
            Profile::Immediate => return vec![self.ready_stage(0)],
            Profile::Realistic => REALISTIC_TIMES,
            Profile::Fast | Profile::Stuck | Profile::Error | Profile::Flapping => FAST_TIMES,
        };
        let stage = |at_ms, phase, step, message: String| Stage {
            at_ms,
            phase,
            step,
            message,
        };
        let mut timeline = vec![
            stage(0, Phase::Scheduling, None, "waiting for a GPU".to_string()),
            stage(
                times[0],
                Phase::Provisioning,
                None,
                "starting the container…".to_string(),
            ),
        ];
        if self.profile == Profile::Stuck {
            return timeline;
        }
        timeline.extend([
            stage(
                times[1],
                Phase::Bootstrapping,
                Some("image_pull"),
                "pulling the engine image".to_string(),
            ),
            stage(
                times[2],
                Phase::Bootstrapping,
                Some("model_download"),
                format!("downloading {}", self.model),
            ),
            stage(
                times[3],
                Phase::Bootstrapping,
                Some("model_load"),
                format!("loading {}", self.model),
            ),
        ]);
        timeline.push(if self.profile == Profile::Error {
            stage(times[4], Phase::Error, None, self.error_message.clone())
        } else {
            self.ready_stage(times[4])
        });
        timeline
    }

    fn ready_stage(&self, at_ms: u64) -> Stage {
        Stage {
            at_ms,
            phase: Phase::Ready,
            step: None,
            message: "ready to serve".to_string(),
        }
    }
}

/// The JSON of one readiness event: `{"phase", "message", "elapsed_ms", "step"?}`.
pub fn event_json(stage: &Stage, elapsed_ms: u64) -> Value {
    let mut event = json!({
        "phase": stage.phase.as_str(),
        "message": stage.message,
        "elapsed_ms": elapsed_ms,
    });
    if let (Some(step), Some(fields)) = (stage.step, event.as_object_mut()) {
        fields.insert("step".to_string(), Value::from(step));
    }
    event
}

/// The live readiness events of one workload: the current stage first, then every stage the
/// workload passes through, in order, each stamped with the time it began; it ends after a
/// terminal phase or when the workload goes away.
///
/// Stages are derived from the followed timeline, never sampled from "now": a watcher that wakes
/// late (a loaded machine, a slow client) still sends each stage it slept through. A timeline
/// replaced meanwhile (new settings, a change of what runs) is sent up to the moment it was
/// replaced, then the new one from its start.
pub struct ReadinessEvents {
    clock: watch::Receiver<ReadinessClock>,
    /// The timeline being followed and the index of the last stage sent on it.
    followed: Option<(ReadinessClock, usize)>,
    done: bool,
}

/// What the watcher does next.
enum Step {
    Send(Stage),
    Switch(ReadinessClock),
    SleepUntil(Instant),
    WaitForChange,
}

impl ReadinessEvents {
    /// Events following `clock`.
    pub fn new(clock: watch::Receiver<ReadinessClock>) -> Self {
        Self {
            clock,
            followed: None,
            done: false,
        }
    }

    /// The next event, waiting for the next transition; `None` once finished.
    pub async fn next(&mut self) -> Option<SseEvent> {
        if self.done {
            return None;
        }
        let (stage, elapsed_ms) = match self.followed.as_mut() {
            None => {
                // The snapshot on connect: the stage in force now.
                let clock = self.clock.borrow_and_update().clone();
                let now = Instant::now();
                let (index, stage) = clock.current(now);
                let elapsed_ms = clock.elapsed_ms(now);
                self.followed = Some((clock, index));
                (stage, elapsed_ms)
            }
            Some((followed, index)) => loop {
                let step = {
                    let latest = self.clock.borrow_and_update();
                    plan_step(followed, *index, &latest, Instant::now())
                };
                match step {
                    Step::Send(stage) => {
                        *index += 1;
                        let at_ms = stage.at_ms;
                        break (stage, at_ms);
                    }
                    Step::Switch(clock) => {
                        // A new timeline is sent from its first stage.
                        let stage = clock.stage(0)?;
                        *followed = clock;
                        *index = 0;
                        break (stage, 0);
                    }
                    Step::SleepUntil(at) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(at.into()) => {}
                            changed = self.clock.changed() => changed.ok()?,
                        }
                    }
                    Step::WaitForChange => self.clock.changed().await.ok()?,
                }
            },
        };
        self.done = stage.phase.is_terminal();
        Some(SseEvent::json(&event_json(&stage, elapsed_ms), self.done))
    }
}

/// The next step of a watcher that has sent stage `index` of `followed`, when `latest` is the
/// workload's clock now.
fn plan_step(
    followed: &ReadinessClock,
    index: usize,
    latest: &ReadinessClock,
    now: Instant,
) -> Step {
    // A real engine's timeline grows under the same generation: follow its latest stages.
    let followed = if latest.generation() == followed.generation() {
        latest
    } else {
        followed
    };
    let next = followed.stage(index + 1);
    if latest.generation() != followed.generation() {
        let successor = latest.successor_of(followed.generation()).unwrap_or(latest);
        // Stages of the followed timeline that began before it was replaced are still sent.
        if let Some(stage) = next {
            if followed.epoch() + Duration::from_millis(stage.at_ms) < successor.epoch() {
                return Step::Send(stage);
            }
        }
        return Step::Switch(ReadinessClock {
            previous: None,
            ..successor.clone()
        });
    }
    match (next, followed.next_transition(index)) {
        (Some(stage), Some(at)) if at <= now => Step::Send(stage),
        (_, Some(at)) => Step::SleepUntil(at),
        _ => Step::WaitForChange,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn phases_at(
        clock: &ReadinessClock,
        offsets: &[u64],
    ) -> Vec<(&'static str, Option<&'static str>)> {
        offsets
            .iter()
            .map(|ms| {
                let stage = clock.current(clock.epoch + Duration::from_millis(*ms)).1;
                (stage.phase.as_str(), stage.step)
            })
            .collect()
    }

    #[test]
    fn fast_goes_through_every_phase() {
        let clock = ReadinessClock::start(Profile::Fast, "x", "m");
        assert_eq!(
            phases_at(&clock, &[0, 50, 100, 160, 230, 300, 100_000]),
            vec![
                ("scheduling", None),
                ("provisioning", None),
                ("bootstrapping", Some("image_pull")),
                ("bootstrapping", Some("model_download")),
                ("bootstrapping", Some("model_load")),
                ("ready", None),
                ("ready", None),
            ]
        );
    }

    #[test]
    fn stuck_error_immediate_and_flapping() {
        let stuck = ReadinessClock::start(Profile::Stuck, "x", "m");
        assert_eq!(phases_at(&stuck, &[1_000_000])[0].0, "provisioning");
        assert_eq!(stuck.next_transition(1), None);
        let error = ReadinessClock::start(Profile::Error, "CUDA oom", "m");
        let (_, stage) = error.current(error.epoch + Duration::from_secs(1));
        assert_eq!(
            (stage.phase, stage.message.as_str()),
            (Phase::Error, "CUDA oom")
        );
        let immediate = ReadinessClock::start(Profile::Immediate, "x", "m");
        assert_eq!(immediate.current(immediate.epoch).1.phase, Phase::Ready);
        let flapping = ReadinessClock::start(Profile::Flapping, "x", "m");
        assert_eq!(
            phases_at(&flapping, &[310, 610, 910, 1210])
                .iter()
                .map(|p| p.0)
                .collect::<Vec<_>>(),
            vec!["ready", "bootstrapping", "ready", "bootstrapping"]
        );
    }

    #[test]
    fn rebootstrap_skips_scheduling_and_provisioning() {
        let clock = ReadinessClock::start(Profile::Fast, "x", "m").rebootstrapped("m2");
        assert_eq!(clock.generation(), 1);
        let (_, first) = clock.current(clock.epoch);
        assert_eq!(
            (first.phase, first.step),
            (Phase::Bootstrapping, Some("image_pull"))
        );
        assert_eq!(phases_at(&clock, &[220])[0].0, "ready");
    }

    /// Drives a watcher's steps on a controlled clock: it wakes at `wakes` (ms from the epoch),
    /// with `latest` as the workload's clock at each wake, and sends what it would send.
    fn sent_at_wakes(
        start: &ReadinessClock,
        index: usize,
        wakes: &[(u64, &ReadinessClock)],
    ) -> Vec<(&'static str, Option<&'static str>, u64)> {
        let mut followed = start.clone();
        let mut index = index;
        let mut sent = Vec::new();
        for (ms, latest) in wakes {
            let now = start.epoch + Duration::from_millis(*ms);
            loop {
                match plan_step(&followed, index, latest, now) {
                    Step::Send(stage) => {
                        index += 1;
                        sent.push((stage.phase.as_str(), stage.step, stage.at_ms));
                    }
                    Step::Switch(clock) => {
                        let stage = clock.stage(0).unwrap();
                        sent.push((stage.phase.as_str(), stage.step, 0));
                        followed = clock;
                        index = 0;
                    }
                    Step::SleepUntil(_) | Step::WaitForChange => break,
                }
            }
        }
        sent
    }

    #[test]
    fn a_late_watcher_sends_every_stage_with_its_start_time() {
        let clock = ReadinessClock::start(Profile::Fast, "x", "m");
        // Snapshot at scheduling, then one wake long after ready.
        assert_eq!(
            sent_at_wakes(&clock, 0, &[(10_000, &clock)]),
            vec![
                ("provisioning", None, 40),
                ("bootstrapping", Some("image_pull"), 80),
                ("bootstrapping", Some("model_download"), 150),
                ("bootstrapping", Some("model_load"), 220),
                ("ready", None, 300),
            ]
        );
        // On time: one stage per wake, none early.
        assert_eq!(
            sent_at_wakes(&clock, 0, &[(39, &clock), (40, &clock), (100, &clock)]),
            vec![
                ("provisioning", None, 40),
                ("bootstrapping", Some("image_pull"), 80),
            ]
        );
    }

    #[test]
    fn a_replaced_timeline_is_sent_up_to_its_replacement_then_the_new_one() {
        let clock = ReadinessClock::start(Profile::Realistic, "x", "m");
        // Replaced 1.5 s in (after provisioning and image_pull began); the watcher slept through.
        let mut replaced = clock.rebootstrapped("m2");
        replaced.epoch = clock.epoch + Duration::from_millis(1500);
        let sent = sent_at_wakes(&clock, 0, &[(1_700, &replaced)]);
        assert_eq!(
            sent,
            vec![
                ("provisioning", None, 600),
                ("bootstrapping", Some("image_pull"), 1200),
                ("bootstrapping", Some("image_pull"), 0),
            ]
        );
        // Two replacements while asleep: each timeline in turn, none skipped.
        let mut second = replaced.restarted(Profile::Fast, "x", "m3");
        second.epoch = clock.epoch + Duration::from_millis(1600);
        let sent = sent_at_wakes(&clock, 1, &[(1_700, &second)]);
        assert_eq!(
            sent,
            vec![
                ("bootstrapping", Some("image_pull"), 1200),
                ("bootstrapping", Some("image_pull"), 0),
                ("scheduling", None, 0),
                ("provisioning", None, 40),
                ("bootstrapping", Some("image_pull"), 80),
            ]
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut clock = ReadinessClock::start(Profile::Fast, "x", "m");
        for _ in 0..100 {
            clock = clock.rebootstrapped("m");
        }
        let mut depth = 0;
        let mut link = clock.previous.as_deref();
        while let Some(previous) = link {
            depth += 1;
            link = previous.previous.as_deref();
        }
        assert_eq!(depth, HISTORY);
        assert!(clock.successor_of(clock.generation() - 1).is_some());
        assert!(clock.successor_of(0).is_none());
    }

    #[test]
    fn event_json_has_step_only_when_set() {
        let clock = ReadinessClock::start(Profile::Fast, "x", "m");
        let (_, stage) = clock.current(clock.epoch);
        assert!(event_json(&stage, 3).get("step").is_none());
        let (_, stage) = clock.current(clock.epoch + Duration::from_millis(100));
        assert_eq!(event_json(&stage, 100)["step"], "image_pull");
    }
}
