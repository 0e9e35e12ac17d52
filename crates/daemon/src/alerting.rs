//! The daemon's alerting task: turns each monitor round into an `alert::Observed`, evaluates
//! the `[alert]` rules, records every transition as an event, hands pages to the notifiers
//! (on the leader only) and keeps the evaluator's state (open alerts, downtimes) in the
//! store ([`store::Settings::alert_state`]), so a restart neither pages again nor forgets a downtime.
//!
//! Followers evaluate too (their `GET /api/v1/alerts` is live) but record, page and persist
//! nothing; they reload the leader's state from the store now and then, and at once when
//! they become leader.
//!
//! A failed scheduled DRT raises `drt_failed/CLUSTER/SCENARIO`, which no rule evaluates: it
//! stays open in the stored state until a later scheduled run of the same scenario on the
//! same cluster passes, which resolves it. The notifiers' delivery counts are served at
//! `/metrics` through [`AlertControl::notifier_stats`].
//!
//! An operation that ends without success raises `operation_failed/CLUSTER/KIND` when a
//! human was not there to see it: one that needs a human, or an automatic one that failed or
//! rolled back (critical for a failover, error otherwise). The next operation of the same
//! kind on the same cluster that succeeds resolves it. An automatic failover that failed
//! before promotion is the exception: the engine retries it, and it pages as
//! `failover_refused` instead.
//!
//! An automatic failover that did not fail over (refused before an operation started, or
//! failed before promotion; see `engine::AutoFailoverNotice`) raises
//! `failover_refused/CLUSTER`, critical, at its first attempt; retries do not page again.
//! A failover that succeeds, or the dead primary answering again, resolves it. Meanwhile the
//! death itself is no longer "handled by automation": `DeadPrimary` pages too.
//!
//! `NoPrimary` does not page from a round whose observations an operation of the cluster
//! may explain (`engine::Engine::operation_overlaps`): mid-failover, or mixing probes from
//! before and after one, the new primary can look isolated beside a replica still seen
//! following the old one. The next round, probed after the operation, pages it if it holds.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use alert::{
    AlertState, ClusterSnapshot, DispatchOptions, DispatchStats, Dispatcher, Evaluator,
    EvaluatorState, InstanceSnapshot, Observed, ProblemSnapshot, Severity, Transition,
    TransitionKind,
};
use anyhow::Context;
use model::{ClusterRound, InstanceAddr, Observation, OperationKind};
use server::alert_routes::{AlertControl, DowntimeRefused};
use store::{
    kinds, EventLevel, NewEvent, OperationRecord, OperationState, Settings, Store, StoreError,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::drt_schedule::DrtOutcome;

/// The rule name of a failed scheduled DRT's page.
pub(crate) const DRT_FAILED_RULE: &str = "drt_failed";
/// The rule name of an operation's page: it needs a human, or an automatic one failed.
pub(crate) const OPERATION_FAILED_RULE: &str = "operation_failed";
/// The rule name of the page for an automatic failover that did not fail over.
pub(crate) const FAILOVER_REFUSED_RULE: &str = "failover_refused";
/// The rule name of the page for a critical event an operation recorded (see
/// [`Alerting::operation_warnings`]).
pub(crate) const OPERATION_WARNING_RULE: &str = "operation_warning";
/// The operations' critical events that page.
const OPERATION_WARNING_KINDS: [&str; 4] = [
    kinds::FENCE_FAILED,
    kinds::FAILOVER_POSSIBLE_LOSS,
    kinds::SEMI_SYNC_SHORTFALL,
    kinds::ROUTING_PUSH_FAILED,
];
/// How often a follower reloads the leader's state.
const FOLLOWER_RELOAD: Duration = Duration::from_secs(10);
/// Rounds waiting for the alerting task before new ones are dropped (the next round says
/// it all again).
const ROUND_QUEUE: usize = 1024;

/// A scheduled DRT's outcome: `(cluster, scenario, outcome, text)`.
type DrtReport = (String, String, DrtOutcome, String);

/// The alerting shared by its task, the API and the DRT scheduler.
pub(crate) struct Alerting {
    evaluator: Mutex<Evaluator>,
    /// `None` once shut down.
    dispatcher: Mutex<Option<Dispatcher>>,
    /// The dispatcher's counts, kept past its shutdown.
    dispatch_stats: DispatchStats,
    /// The state last written to the store; its lock orders the writes.
    persisted: tokio::sync::Mutex<Option<serde_json::Value>>,
    store: Arc<dyn Store>,
    engine: Arc<engine::Engine>,
}

/// The running alerting: the shared part, the inputs of its task, and the task.
pub(crate) struct Running {
    pub alerting: Arc<Alerting>,
    /// Give the monitor's rounds here (`try_send`).
    pub rounds: mpsc::Sender<ClusterRound>,
    /// The DRT scheduler's outcome hook: pages a failed run, resolves that page after a
    /// pass.
    pub on_drt_failure: crate::drt_schedule::OutcomeHook,
    /// Ends when every round sender is dropped.
    pub task: tokio::task::JoinHandle<()>,
}

use model::clock::now_ms;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Start alerting from `[alert]`: build the notifiers (reading their secret files), load the
/// persisted state, start the dispatcher and the task.
pub(crate) async fn start(
    cfg: &alert::AlertConfig,
    store: Arc<dyn Store>,
    engine: Arc<engine::Engine>,
) -> anyhow::Result<Running> {
    let rules = cfg.validate().map_err(|es| {
        let lines: Vec<String> = es.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid [alert] section: {}", lines.join("; "))
    })?;
    // Secret file paths were resolved against the config's directory at load.
    let notifiers = cfg
        .build_notifiers(Path::new("/"))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("build the alert notifiers")?;
    let state = load_state(store.as_ref()).await;
    let names: Vec<String> = notifiers.iter().map(|n| n.name().to_string()).collect();
    info!(rules = rules.len(), notifiers = ?names, "alerting started");
    let dispatcher = Dispatcher::start(
        notifiers,
        DispatchOptions {
            queue_capacity: cfg.queue_capacity,
        },
    );
    let alerting = Arc::new(Alerting {
        evaluator: Mutex::new(Evaluator::with_state(rules, state)),
        dispatch_stats: dispatcher.stats(),
        dispatcher: Mutex::new(Some(dispatcher)),
        persisted: tokio::sync::Mutex::new(None),
        store,
        engine,
    });
    let (rounds, rounds_rx) = mpsc::channel(ROUND_QUEUE);
    let (drt_tx, drt_rx) = mpsc::channel::<DrtReport>(64);
    let on_drt_failure: crate::drt_schedule::OutcomeHook = Arc::new(
        move |cluster: &str, scenario: &str, outcome: DrtOutcome, text: String| {
            if drt_tx
                .try_send((cluster.to_string(), scenario.to_string(), outcome, text))
                .is_err()
            {
                warn!(
                    cluster,
                    scenario,
                    ?outcome,
                    "the alerting task is gone or busy: a DRT outcome is not paged"
                );
            }
        },
    );
    let ops_rx = alerting.engine.finished_operations();
    let notices_rx = alerting.engine.auto_failover_notices();
    let task = tokio::spawn(alerting.clone().run(rounds_rx, drt_rx, ops_rx, notices_rx));
    Ok(Running {
        alerting,
        rounds,
        on_drt_failure,
        task,
    })
}

/// The persisted state, or an empty one (logged) when there is none or it does not parse.
async fn load_state(store: &dyn Store) -> EvaluatorState {
    match store.alert_state::<EvaluatorState>().await {
        Ok(Some(s)) => s,
        Ok(None) => EvaluatorState::default(),
        Err(e @ StoreError::Corrupt { .. }) => {
            warn!(error = %e, "the stored alert state does not parse; starting with no open alerts and no downtimes");
            EvaluatorState::default()
        }
        Err(e) => {
            warn!(error = %e, "cannot read the stored alert state; starting with none");
            EvaluatorState::default()
        }
    }
}

/// What decides whether the state must be written: the open alerts' keys, states, silence
/// and page marks, and the downtimes. Values and summaries refresh every round and are not
/// worth a write.
type Fingerprint = (Vec<(String, AlertState, bool, bool)>, Vec<u64>);

fn fingerprint(ev: &Evaluator) -> Fingerprint {
    (
        ev.alerts()
            .map(|a| (a.key.clone(), a.state, a.silenced, a.paged_at.is_some()))
            .collect(),
        ev.downtimes(0).iter().map(|d| d.id).collect(),
    )
}

/// The role label of an observation: what its own state shows, else what the round named.
fn role_of(o: &Observation, primary: Option<&InstanceAddr>) -> String {
    match o.state() {
        Some(s) => model::Role::of(s).as_str().to_string(),
        None if primary == Some(&o.addr) => "primary".into(),
        None => "unknown".into(),
    }
}

/// One round as the evaluator sees it; `prev` holds each instance's previous observation
/// (for rates) and is updated.
pub(crate) fn observed_of(
    round: &ClusterRound,
    prev: &mut HashMap<InstanceAddr, Observation>,
) -> Observed {
    let mut instances = Vec::with_capacity(round.observations.len());
    for o in &round.observations {
        let metrics: BTreeMap<String, f64> = model::alert_values(prev.get(&o.addr), o);
        let problems = round
            .problems
            .iter()
            .filter(|p| p.instance.as_ref() == Some(&o.addr))
            .map(ProblemSnapshot::from)
            .collect();
        instances.push(InstanceSnapshot {
            cluster: round.cluster.clone(),
            instance: o.addr.to_string(),
            role: role_of(o, round.primary.as_ref()),
            metrics,
            problems,
        });
    }
    prev.retain(|a, _| round.observations.iter().any(|o| &o.addr == a));
    for o in &round.observations {
        prev.insert(o.addr.clone(), o.clone());
    }
    let cluster_problems = round
        .problems
        .iter()
        .filter(|p| p.instance.is_none())
        .map(ProblemSnapshot::from)
        .collect();
    Observed {
        instances,
        clusters: vec![ClusterSnapshot {
            cluster: round.cluster.clone(),
            problems: cluster_problems,
        }],
    }
}

fn level_of(s: Severity) -> EventLevel {
    match s {
        Severity::Critical => EventLevel::Critical,
        Severity::Error => EventLevel::Error,
        Severity::Warning => EventLevel::Warning,
        Severity::Info => EventLevel::Info,
    }
}

/// The event that records a transition.
fn event_of(t: &Transition, downtime: Option<u64>) -> NewEvent {
    let a = &t.alert;
    let (kind, level, message) = match t.kind {
        TransitionKind::Fired => (
            kinds::ALERT_FIRED,
            level_of(a.severity),
            format!("alert {} firing: {}", a.rule, a.summary),
        ),
        TransitionKind::FiredSilenced => (
            kinds::ALERT_FIRED,
            level_of(a.severity),
            format!(
                "alert {} firing, silenced by downtime {}: {}",
                a.rule,
                downtime.map_or_else(|| "?".to_string(), |d| d.to_string()),
                a.summary
            ),
        ),
        TransitionKind::DowntimeEnded => (
            kinds::ALERT_FIRED,
            level_of(a.severity),
            format!(
                "alert {} still firing after its downtime ended, paged now: {}",
                a.rule, a.summary
            ),
        ),
        TransitionKind::Resolved => (
            kinds::ALERT_RESOLVED,
            EventLevel::Info,
            format!(
                "alert {} resolved ({}): {}",
                a.rule,
                a.resolve_reason
                    .map(|r| serde_json::to_value(r)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default())
                    .unwrap_or_default(),
                a.summary
            ),
        ),
    };
    let mut ev = NewEvent::new(now_ms(), kind, level, message)
        .with_cluster(a.cluster.clone())
        .with_data(serde_json::json!({
            "key": a.key,
            "rule": a.rule,
            "severity": a.severity.to_string(),
            "transition": t.kind.to_string(),
            "silenced": t.kind == TransitionKind::FiredSilenced,
            "paged": t.pages(),
            "downtime_id": downtime,
            "value": a.value.filter(|v| v.is_finite()),
            "labels": a.labels,
        }));
    if let Some(addr) = a.instance.as_deref().and_then(|i| i.parse().ok()) {
        ev = ev.with_instance(addr);
    }
    ev
}

impl Alerting {
    async fn run(
        self: Arc<Self>,
        mut rounds: mpsc::Receiver<ClusterRound>,
        mut drt: mpsc::Receiver<DrtReport>,
        mut ops: tokio::sync::broadcast::Receiver<OperationRecord>,
        mut notices: tokio::sync::broadcast::Receiver<engine::AutoFailoverNotice>,
    ) {
        let mut prev: HashMap<String, HashMap<InstanceAddr, Observation>> = HashMap::new();
        // The state was loaded at start: the first round takes it as is.
        let mut was_leader: Option<bool> = None;
        let mut last_reload = std::time::Instant::now();
        let mut drt_open = true;
        let mut ops_open = true;
        let mut notices_open = true;
        loop {
            tokio::select! {
                r = rounds.recv() => {
                    let Some(r) = r else { break };
                    let leader = self.engine.is_leader();
                    if leader && was_leader == Some(false) {
                        info!("leader now: taking over the stored alert state");
                        self.reload().await;
                    } else if !leader && last_reload.elapsed() >= FOLLOWER_RELOAD {
                        self.reload().await;
                        last_reload = std::time::Instant::now();
                    }
                    was_leader = Some(leader);
                    let r = self.without_explained_problems(r).await;
                    let observed = observed_of(&r, prev.entry(r.cluster.clone()).or_default());
                    self.evaluate(r.at_ms, &r.cluster, &observed, leader).await;
                }
                f = drt.recv(), if drt_open => match f {
                    Some((cluster, scenario, DrtOutcome::Failed, text)) => {
                        self.drt_failed(&cluster, &scenario, text).await
                    }
                    Some((cluster, scenario, DrtOutcome::Passed, text)) => {
                        self.drt_passed(&cluster, &scenario, text).await
                    }
                    None => drt_open = false,
                },
                op = ops.recv(), if ops_open => match op {
                    Ok(rec) => self.operation_finished(&rec).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "the alerting task fell behind: finished operations not judged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => ops_open = false,
                },
                n = notices.recv(), if notices_open => match n {
                    Ok(n) => self.auto_failover_notice(n).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "the alerting task fell behind: refused failovers not judged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => notices_open = false,
                },
            }
        }
    }

    /// The round without the problems that need no page: its `DeadPrimary` when
    /// automation takes care of that death (failover `auto`, running or succeeded, or about
    /// to start and not blocked), and its `NoPrimary` when an operation of the cluster may
    /// explain what the round saw. A human is paged when automation cannot act, and a
    /// failover that fails pages as `operation_failed` or `failover_refused`.
    async fn without_explained_problems(&self, mut r: ClusterRound) -> ClusterRound {
        if r.has(model::ProblemKind::NoPrimary)
            && self.engine.operation_overlaps(&r.cluster, &r.observations)
        {
            info!(cluster = %r.cluster, "NoPrimary seen while an operation changes the topology: not paged");
            r.problems
                .retain(|p| p.kind != model::ProblemKind::NoPrimary);
        }
        let dead = r
            .problems
            .iter()
            .find(|p| p.kind == model::ProblemKind::DeadPrimary)
            .and_then(|p| p.instance.clone());
        if let Some(dead) = dead {
            if self
                .engine
                .automation_handles_dead_primary(&r.cluster, &dead)
                .await
            {
                r.problems
                    .retain(|p| p.kind != model::ProblemKind::DeadPrimary);
            }
        }
        r
    }

    /// Replace the in-memory state with the stored one (a follower mirrors the leader).
    async fn reload(&self) {
        let state = load_state(self.store.as_ref()).await;
        let mut ev = lock(&self.evaluator);
        let rules = ev.rules().to_vec();
        *ev = Evaluator::with_state(rules, state);
    }

    /// Evaluate one cluster; on the leader record, page and persist what changed.
    pub(crate) async fn evaluate(
        &self,
        now: u64,
        cluster: &str,
        observed: &Observed,
        leader: bool,
    ) {
        let (transitions, changed, downtimes) = {
            let mut ev = lock(&self.evaluator);
            let before = fingerprint(&ev);
            let transitions = ev.evaluate_cluster(now, cluster, observed);
            let changed = fingerprint(&ev) != before;
            let downtimes: Vec<Option<u64>> = transitions
                .iter()
                .map(|t| {
                    ev.downtime_covering(now, &t.alert.cluster, t.alert.instance.as_deref())
                        .map(|d| d.id)
                })
                .collect();
            (transitions, changed, downtimes)
        };
        if !leader {
            return;
        }
        if !transitions.is_empty() {
            self.submit(&transitions);
        }
        for (t, d) in transitions.iter().zip(downtimes) {
            info!(key = %t.alert.key, transition = %t.kind, pages = t.pages(), "alert transition");
            if let Err(e) = self.store.append_event(&event_of(t, d)).await {
                warn!(error = %e, key = %t.alert.key, "cannot record an alert transition");
            }
        }
        if changed {
            if let Err(e) = self.persist().await {
                warn!(error = %e, "cannot persist the alert state");
            }
        }
    }

    fn submit(&self, transitions: &[Transition]) {
        if let Some(d) = lock(&self.dispatcher).as_ref() {
            d.submit(transitions);
        }
    }

    /// Write the state if it differs from what was last written.
    async fn persist(&self) -> Result<(), StoreError> {
        let mut last = self.persisted.lock().await;
        let value = serde_json::to_value(lock(&self.evaluator).state())
            .expect("the evaluator state serializes: string keys only");
        if last.as_ref() == Some(&value) {
            return Ok(());
        }
        self.store.put_alert_state(&value).await?;
        *last = Some(value);
        Ok(())
    }

    /// Page a failed scheduled DRT: rule `drt_failed`, severity error, key
    /// `drt_failed/CLUSTER/SCENARIO` (so repeats group into one incident), silenced by a
    /// downtime on the cluster. No rule evaluates it: it stays open (in the stored state)
    /// until [`Alerting::drt_passed`] resolves it.
    async fn drt_failed(&self, cluster: &str, scenario: &str, text: String) {
        let labels = BTreeMap::from([
            ("scenario".to_string(), scenario.to_string()),
            ("source".to_string(), "drt_schedule".to_string()),
        ]);
        let key = drt_failed_key(cluster, scenario);
        self.raise(key, DRT_FAILED_RULE, Severity::Error, cluster, labels, text)
            .await;
    }

    /// Raise an alert that no rule evaluates, firing at once (silenced by a downtime on
    /// the cluster), and record it; a repeat of an open key updates it without paging again.
    async fn raise(
        &self,
        key: String,
        rule: &str,
        severity: Severity,
        cluster: &str,
        labels: BTreeMap<String, String>,
        summary: String,
    ) {
        let now = now_ms();
        let alert = alert::Alert {
            key,
            rule: rule.into(),
            severity,
            cluster: cluster.into(),
            instance: None,
            role: None,
            labels,
            summary,
            value: None,
            state: AlertState::Firing,
            pending_since: now,
            window_value: None,
            started_at: Some(now),
            resolved_at: None,
            resolve_reason: None,
            silenced: false,
            paged_at: None,
        };
        let (t, downtime) = {
            let mut ev = lock(&self.evaluator);
            let t = ev.raise(now, alert);
            let downtime = ev.downtime_covering(now, cluster, None).map(|d| d.id);
            (t, downtime)
        };
        self.record_raised(&t, downtime).await;
    }

    /// Judge a finished operation: page one that needs a human or an automatic one that did
    /// not succeed; a success resolves the open page of the same kind on the same cluster.
    async fn operation_finished(&self, rec: &OperationRecord) {
        self.operation_warnings(rec).await;
        let key = operation_failed_key(&rec.cluster, &rec.kind);
        let text = format!(
            "{} {} of {} ({}) {}{}",
            rec.kind,
            rec.id,
            rec.cluster,
            rec.trigger,
            rec.state,
            rec.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        if rec.state == OperationState::Succeeded {
            let mut keys = vec![key];
            if OperationKind::of(&rec.kind) == Some(OperationKind::Failover) {
                keys.push(failover_refused_key(&rec.cluster));
            }
            for key in keys {
                let t = lock(&self.evaluator).resolve_raised(now_ms(), &key, text.clone());
                if let Some(t) = t {
                    self.record_raised(&t, None).await;
                }
            }
            return;
        }
        let Some(severity) = operation_severity(rec) else {
            return;
        };
        let labels = BTreeMap::from([
            ("kind".to_string(), rec.kind.clone()),
            ("operation_id".to_string(), rec.id.to_string()),
            ("state".to_string(), rec.state.to_string()),
            ("trigger".to_string(), rec.trigger.clone()),
        ]);
        self.raise(
            key,
            OPERATION_FAILED_RULE,
            severity,
            &rec.cluster,
            labels,
            text,
        )
        .await;
    }

    /// Page what an operation recorded as critical although it may have succeeded: a fence
    /// command that failed, a promotion that may have lost acknowledged writes
    /// (`on_possible_loss = "promote"`), a new primary left with fewer semi-sync replicas
    /// than `min_semi_sync_replicas`. Each raises `operation_warning/CLUSTER/EVENT_KIND`,
    /// critical; an operation of the cluster that ends succeeded without that kind of
    /// event resolves it.
    async fn operation_warnings(&self, rec: &OperationRecord) {
        let q = store::EventQuery {
            cluster: Some(rec.cluster.clone()),
            after_id: None,
            limit: 500,
            kinds: OPERATION_WARNING_KINDS
                .iter()
                .map(|k| k.to_string())
                .collect(),
        };
        let events = match self.store.events(&q).await {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, operation = rec.id, "cannot read an operation's critical events");
                return;
            }
        };
        for kind in OPERATION_WARNING_KINDS {
            let key = operation_warning_key(&rec.cluster, kind);
            let mine = events.iter().rev().find(|e| {
                e.kind == *kind && e.data["operation_id"].as_u64() == Some(rec.id as u64)
            });
            match mine {
                Some(e) => {
                    let labels = BTreeMap::from([
                        ("event".to_string(), kind.to_string()),
                        ("kind".to_string(), rec.kind.clone()),
                        ("operation_id".to_string(), rec.id.to_string()),
                        ("state".to_string(), rec.state.to_string()),
                    ]);
                    self.raise(
                        key,
                        OPERATION_WARNING_RULE,
                        Severity::Critical,
                        &rec.cluster,
                        labels,
                        e.message.clone(),
                    )
                    .await;
                }
                None if rec.state == OperationState::Succeeded => {
                    let text = format!(
                        "{} {} of {} succeeded without {kind}",
                        rec.kind, rec.id, rec.cluster
                    );
                    let t = lock(&self.evaluator).resolve_raised(now_ms(), &key, text);
                    if let Some(t) = t {
                        self.record_raised(&t, None).await;
                    }
                }
                None => {}
            }
        }
    }

    /// An automatic failover did not fail over: raise `failover_refused/CLUSTER`, critical,
    /// unless it is open already (a retry does not page again). Its episode ended: resolve
    /// it.
    async fn auto_failover_notice(&self, n: engine::AutoFailoverNotice) {
        match n {
            engine::AutoFailoverNotice::Refused {
                cluster,
                dead,
                attempt,
                reason,
                operation_id,
                next_attempt_ms,
            } => {
                let key = failover_refused_key(&cluster);
                if lock(&self.evaluator).raised().any(|a| a.key == key) {
                    return;
                }
                let retry_in = next_attempt_ms.saturating_sub(now_ms());
                let text = format!(
                    "primary {dead} of {cluster} is dead and its automatic failover did not happen (attempt {attempt}): {reason}; retrying in {retry_in} ms while it stays dead"
                );
                let mut labels = BTreeMap::from([
                    ("dead_primary".to_string(), dead.to_string()),
                    ("attempt".to_string(), attempt.to_string()),
                ]);
                if let Some(id) = operation_id {
                    labels.insert("operation_id".to_string(), id.to_string());
                }
                self.raise(
                    key,
                    FAILOVER_REFUSED_RULE,
                    Severity::Critical,
                    &cluster,
                    labels,
                    text,
                )
                .await;
            }
            engine::AutoFailoverNotice::Settled { cluster, dead, why } => {
                let key = failover_refused_key(&cluster);
                let text = format!("dead primary {dead} of {cluster} dealt with: {why}");
                let t = lock(&self.evaluator).resolve_raised(now_ms(), &key, text);
                if let Some(t) = t {
                    self.record_raised(&t, None).await;
                }
            }
        }
    }

    /// A scheduled DRT passed: resolve the open `drt_failed` alert of its cluster and
    /// scenario, if any, and send the resolve to the notifiers when it was paged.
    async fn drt_passed(&self, cluster: &str, scenario: &str, text: String) {
        let key = drt_failed_key(cluster, scenario);
        let t = lock(&self.evaluator).resolve_raised(now_ms(), &key, text);
        if let Some(t) = t {
            self.record_raised(&t, None).await;
        }
    }

    /// Record a raised alert's transition; on the leader also page it and persist the state.
    async fn record_raised(&self, t: &Transition, downtime: Option<u64>) {
        info!(key = %t.alert.key, transition = %t.kind, pages = t.pages(), "alert transition");
        let leader = self.engine.is_leader();
        if leader {
            self.submit(std::slice::from_ref(t));
        }
        if let Err(e) = self.store.append_event(&event_of(t, downtime)).await {
            warn!(error = %e, key = %t.alert.key, "cannot record a DRT alert transition");
        }
        if leader {
            if let Err(e) = self.persist().await {
                warn!(error = %e, "cannot persist the alert state");
            }
        }
    }

    /// Stop the notifiers, letting them deliver what is queued for up to `grace`, and write
    /// the state a last time.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        let dispatcher = lock(&self.dispatcher).take();
        if let Some(d) = dispatcher {
            let stats = d.stats();
            d.shutdown(grace).await;
            for s in stats.snapshot() {
                info!(notifier = %s.name, sent = s.sent, failed = s.failed, dropped = s.dropped, "notifier stopped");
            }
        }
        if self.engine.is_leader() {
            if let Err(e) = self.persist().await {
                warn!(error = %e, "cannot persist the alert state at shutdown");
            }
        }
    }

    async fn downtime_event(&self, kind: &str, message: String, d: &alert::Downtime) {
        let mut ev = NewEvent::new(now_ms(), kind, EventLevel::Info, message)
            .with_data(serde_json::to_value(d).unwrap_or(serde_json::Value::Null));
        match &d.target {
            alert::DowntimeTarget::Cluster(c) => ev = ev.with_cluster(c.clone()),
            alert::DowntimeTarget::Instance(i) => {
                if let Ok(a) = i.parse() {
                    ev = ev.with_instance(a);
                }
            }
        }
        if let Err(e) = self.store.append_event(&ev).await {
            warn!(error = %e, "cannot record a downtime event");
        }
    }
}

/// The key of an operation's page: one per cluster and kind, so a retry that fails again
/// updates it and the next success resolves it.
fn operation_failed_key(cluster: &str, kind: &str) -> String {
    alert::alert_key(OPERATION_FAILED_RULE, cluster, Some(kind))
}

/// How loud an operation that did not succeed pages, if at all. One that needs a human
/// always pages; a manual one that failed or rolled back was seen by the person who ran it
/// (and a dead primary still pages through its problem); an automatic failover that failed
/// before promotion is retried and pages as `failover_refused`.
fn operation_severity(rec: &OperationRecord) -> Option<Severity> {
    let failover = OperationKind::of(&rec.kind) == Some(OperationKind::Failover);
    match rec.state {
        OperationState::Succeeded | OperationState::Running | OperationState::Proposed => None,
        OperationState::NeedsHuman => Some(Severity::Critical),
        _ if rec.trigger == "manual" => None,
        // Retried by the engine, and paged as `failover_refused`.
        OperationState::Failed
            if failover
                && rec.trigger == "auto"
                && rec.data["promote_started"].as_bool() != Some(true) =>
        {
            None
        }
        _ if failover => Some(Severity::Critical),
        _ => Some(Severity::Error),
    }
}

/// The key of the page for a critical event of kind `event` an operation of `cluster`
/// recorded.
fn operation_warning_key(cluster: &str, event: &str) -> String {
    alert::alert_key(OPERATION_WARNING_RULE, cluster, Some(event))
}

/// The key of the page for a cluster's automatic failover that did not fail over.
fn failover_refused_key(cluster: &str) -> String {
    alert::alert_key(FAILOVER_REFUSED_RULE, cluster, None)
}

/// The key of a scheduled DRT's failure alert.
fn drt_failed_key(cluster: &str, scenario: &str) -> String {
    alert::alert_key(DRT_FAILED_RULE, cluster, Some(scenario))
}

fn target_text(t: &alert::DowntimeTarget) -> String {
    match t {
        alert::DowntimeTarget::Cluster(c) => format!("cluster {c}"),
        alert::DowntimeTarget::Instance(i) => format!("instance {i}"),
    }
}

#[async_trait::async_trait]
impl AlertControl for Alerting {
    fn alerts(&self) -> Vec<(alert::Alert, Option<u64>)> {
        let now = now_ms();
        let ev = lock(&self.evaluator);
        // Rule alerts and the ones the daemon raises itself (a failed scheduled DRT).
        ev.alerts()
            .chain(ev.raised())
            .map(|a| {
                let d = ev
                    .downtime_covering(now, &a.cluster, a.instance.as_deref())
                    .map(|d| d.id);
                (a.clone(), d)
            })
            .collect()
    }

    fn downtimes(&self) -> Vec<alert::Downtime> {
        lock(&self.evaluator)
            .downtimes(now_ms())
            .into_iter()
            .cloned()
            .collect()
    }

    async fn add_downtime(
        &self,
        request: alert::NewDowntime,
    ) -> Result<alert::Downtime, DowntimeRefused> {
        if !self.engine.is_leader() {
            return Err(DowntimeRefused::NotLeader);
        }
        let d = lock(&self.evaluator).add_downtime(now_ms(), request)?;
        self.persist().await?;
        let until = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(d.ends_at),
        );
        self.downtime_event(
            kinds::DOWNTIME_ADDED,
            format!(
                "downtime {} on {} until {until} by {}: {}",
                d.id,
                target_text(&d.target),
                d.who,
                d.reason
            ),
            &d,
        )
        .await;
        Ok(d)
    }

    fn notifier_stats(&self) -> Vec<alert::NotifierStats> {
        self.dispatch_stats.snapshot()
    }

    async fn remove_downtime(&self, id: u64) -> Result<Option<alert::Downtime>, DowntimeRefused> {
        if !self.engine.is_leader() {
            return Err(DowntimeRefused::NotLeader);
        }
        let removed = lock(&self.evaluator).remove_downtime(id);
        if let Some(d) = &removed {
            self.persist().await?;
            self.downtime_event(
                kinds::DOWNTIME_REMOVED,
                format!(
                    "downtime {} on {} ended early",
                    d.id,
                    target_text(&d.target)
                ),
                d,
            )
            .await;
        }
        Ok(removed)
    }
}
