//! The evaluator: a pure, deterministic step from (rules, state, what the monitor saw, now) to
//! alert transitions. No clock and no IO: the caller passes the time and persists the state.
//!
//! An alert is one rule on one target (an instance, or a whole cluster for cluster-wide
//! problems), keyed `rule/cluster/instance` (or `rule/cluster`). It is *pending* while the
//! condition holds for less than the rule's `for`, then *firing* until the condition clears,
//! the target disappears from the input or the rule is removed; then it is *resolved* and
//! leaves the state. A firing alert never fires again (the key is the dedup key).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::downtime::{Downtime, DowntimeError, NewDowntime};
use crate::rule::{Condition, ProblemMatch, Rule, Severity};
use crate::UnixMs;

/// What the monitor saw of one instance in one round.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceSnapshot {
    /// The cluster's name.
    pub cluster: String,
    /// The instance, `host:port`.
    pub instance: String,
    /// Its role as the monitor names it, e.g. `primary` or `replica`.
    pub role: String,
    /// Its metrics by key (`up`, `heartbeat_lag_seconds`, …). A missing or non-finite value
    /// matches no metric rule.
    pub metrics: BTreeMap<String, f64>,
    /// The analysis problems about this instance.
    pub problems: Vec<ProblemSnapshot>,
}

/// One analysis problem, as an alert rule sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProblemSnapshot {
    /// The problem kind's name, e.g. `DeadPrimary` (`model::ProblemKind`'s `Display`).
    pub kind: String,
    /// Its analysis severity; `Critical` is page-worthy.
    pub severity: model::Severity,
    /// One line for humans.
    pub summary: String,
}

impl From<&model::Problem> for ProblemSnapshot {
    fn from(p: &model::Problem) -> Self {
        Self {
            kind: p.kind.to_string(),
            severity: p.severity,
            summary: p.summary.clone(),
        }
    }
}

/// Problems about a whole cluster rather than one instance (e.g. `NoPrimary`).
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSnapshot {
    /// The cluster's name.
    pub cluster: String,
    /// Its cluster-wide problems.
    pub problems: Vec<ProblemSnapshot>,
}

/// One evaluation's input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Every instance seen, with its metrics and problems.
    pub instances: Vec<InstanceSnapshot>,
    /// Cluster-wide problems, one entry per cluster (an entry with no problems still says the
    /// cluster exists).
    pub clusters: Vec<ClusterSnapshot>,
}

/// Where an alert is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds, for less than the rule's `for` so far.
    Pending,
    /// The condition has held for the rule's `for`.
    Firing,
    /// It fired, and has ended. Only seen in a `Resolved` transition.
    Resolved,
}

/// Why a firing alert resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveReason {
    /// The condition no longer holds.
    ConditionCleared,
    /// The instance (or the cluster) is no longer in the input.
    TargetGone,
    /// The rule is no longer configured.
    RuleRemoved,
}

/// One alert: a rule on a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `rule/cluster/instance`, or `rule/cluster` for a cluster-wide alert: the dedup key.
    pub key: String,
    /// The rule's name.
    pub rule: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The cluster.
    pub cluster: String,
    /// The instance, `None` for a cluster-wide alert.
    pub instance: Option<String>,
    /// The instance's role at the last evaluation.
    pub role: Option<String>,
    /// The rule's labels.
    pub labels: BTreeMap<String, String>,
    /// One line for humans, as of the last evaluation.
    pub summary: String,
    /// The metric's value at the last evaluation (metric rules).
    pub value: Option<f64>,
    /// Where it is in its life.
    pub state: AlertState,
    /// When the condition started to hold (the start of the current `for` window).
    pub pending_since: UnixMs,
    /// The value at `pending_since` (rules with `rising`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_value: Option<f64>,
    /// When it fired.
    pub started_at: Option<UnixMs>,
    /// When it resolved.
    pub resolved_at: Option<UnixMs>,
    /// Why it resolved.
    pub resolve_reason: Option<ResolveReason>,
    /// Whether a downtime covers it and it has not been paged.
    pub silenced: bool,
    /// When it was paged (sent to notifiers); `None` while silenced.
    pub paged_at: Option<UnixMs>,
}

/// The stable key of an alert, also its notifiers' dedup key.
pub fn alert_key(rule: &str, cluster: &str, instance: Option<&str>) -> String {
    match instance {
        Some(i) => format!("{rule}/{cluster}/{i}"),
        None => format!("{rule}/{cluster}"),
    }
}

/// What happened to an alert in one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// It started firing: page it.
    Fired,
    /// It started firing inside a downtime: recorded, not paged.
    FiredSilenced,
    /// The downtime covering it ended while it still fires: page it now.
    DowntimeEnded,
    /// It stopped firing. Sent to notifiers only if it was paged.
    Resolved,
}

/// An alert's change, with the alert as it is after the change.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// What happened.
    pub kind: TransitionKind,
    /// The alert after it happened.
    pub alert: Alert,
}

impl Transition {
    /// Whether notifiers get it: a page (`Fired`, `DowntimeEnded`) or the resolve of an
    /// alert that was paged.
    pub fn pages(&self) -> bool {
        match self.kind {
            TransitionKind::Fired | TransitionKind::DowntimeEnded => true,
            TransitionKind::FiredSilenced => false,
            TransitionKind::Resolved => self.alert.paged_at.is_some(),
        }
    }
}

/// The evaluator's persistent state: open (pending and firing) alerts and downtimes.
/// Serialize it to persist it; restore with [`Evaluator::with_state`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluatorState {
    /// Open alerts by key.
    alerts: BTreeMap<String, Alert>,
    /// Downtimes by id, expired ones pruned at each evaluation.
    downtimes: BTreeMap<u64, Downtime>,
    /// The next downtime id.
    next_downtime_id: u64,
    /// Open alerts raised by the daemon rather than by a rule (a failed scheduled DRT), by
    /// key. No evaluation touches them; they end with [`Evaluator::resolve_raised`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    raised: BTreeMap<String, Alert>,
}

/// Rules plus state. See the module docs.
#[derive(Clone, Debug)]
pub struct Evaluator {
    rules: Vec<Rule>,
    state: EvaluatorState,
}

/// One target of a rule: an instance or a cluster.
struct Target<'a> {
    cluster: &'a str,
    instance: Option<&'a str>,
    role: Option<&'a str>,
    metrics: Option<&'a BTreeMap<String, f64>>,
    problems: &'a [ProblemSnapshot],
}

/// A condition that holds, with what the summary needs.
struct Hit {
    value: Option<f64>,
    problems: String,
}

impl Evaluator {
    /// An evaluator with no open alerts and no downtimes.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self::with_state(rules, EvaluatorState::default())
    }

    /// An evaluator resuming from persisted state. Alerts of rules no longer in `rules`
    /// resolve at the next evaluation.
    pub fn with_state(rules: Vec<Rule>, state: EvaluatorState) -> Self {
        Self { rules, state }
    }

    /// Replace the rules (a config reload); the same rule on the same target keeps its alert.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        self.rules = rules;
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The state, to persist.
    pub fn state(&self) -> &EvaluatorState {
        &self.state
    }

    /// The open (pending and firing) alerts, by key.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.state.alerts.values()
    }

    /// One open alert.
    pub fn alert(&self, key: &str) -> Option<&Alert> {
        self.state.alerts.get(key)
    }

    /// Evaluate the whole fleet at `now`: any target absent from `observed` resolves its
    /// alerts. Transitions come in a stable order: per rule (in order) and target (in input
    /// order, instances before clusters), then resolves of vanished targets and removed
    /// rules, then downtime ends, each in key order.
    pub fn evaluate(&mut self, now: UnixMs, observed: &Observed) -> Vec<Transition> {
        self.run(now, None, observed)
    }

    /// Evaluate one cluster at `now` (a monitor that publishes a round per cluster): only
    /// entries of `cluster` in `observed` are read, and only that cluster's alerts change.
    pub fn evaluate_cluster(
        &mut self,
        now: UnixMs,
        cluster: &str,
        observed: &Observed,
    ) -> Vec<Transition> {
        self.run(now, Some(cluster), observed)
    }

    /// Add a downtime starting now. Alerts it covers that fire from now on are silenced; an
    /// alert already paged stays as it is (and its resolve is still sent).
    pub fn add_downtime(
        &mut self,
        now: UnixMs,
        request: NewDowntime,
    ) -> Result<Downtime, DowntimeError> {
        request.check(now)?;
        let id = self.state.next_downtime_id.max(1);
        self.state.next_downtime_id = id + 1;
        let d = Downtime {
            id,
            target: request.target,
            created_at: now,
            ends_at: request.ends_at,
            reason: request.reason,
            who: request.who,
        };
        self.state.downtimes.insert(id, d.clone());
        Ok(d)
    }

    /// The downtimes in force at `now`, by id.
    pub fn downtimes(&self, now: UnixMs) -> Vec<&Downtime> {
        self.state
            .downtimes
            .values()
            .filter(|d| d.is_active(now))
            .collect()
    }

    /// Raise an alert that no rule evaluates (e.g. `drt_failed`): `alert` firing now,
    /// silenced when a downtime covers its target at `now`. An open raised alert of the same
    /// key is replaced but keeps its start, and its page mark (so its resolve is still sent).
    /// Returns the transition to record and page.
    pub fn raise(&mut self, now: UnixMs, mut alert: Alert) -> Transition {
        let previous = self.state.raised.remove(&alert.key);
        alert.state = AlertState::Firing;
        alert.resolved_at = None;
        alert.resolve_reason = None;
        alert.silenced = covering(
            &self.state.downtimes,
            now,
            &alert.cluster,
            alert.instance.as_deref(),
        )
        .is_some();
        let kind = if alert.silenced {
            TransitionKind::FiredSilenced
        } else {
            TransitionKind::Fired
        };
        alert.paged_at = (!alert.silenced).then_some(now);
        alert.started_at = Some(now);
        if let Some(p) = previous {
            alert.pending_since = p.pending_since;
            alert.started_at = p.started_at.or(alert.started_at);
            alert.paged_at = alert.paged_at.or(p.paged_at);
        }
        self.state.raised.insert(alert.key.clone(), alert.clone());
        Transition { kind, alert }
    }

    /// Resolve the open raised alert `key` at `now` with a new `summary` (why it ended);
    /// `None` when none is open. The transition pages when the alert was paged.
    pub fn resolve_raised(
        &mut self,
        now: UnixMs,
        key: &str,
        summary: String,
    ) -> Option<Transition> {
        let mut a = self.state.raised.remove(key)?;
        a.summary = summary;
        Some(resolve(a, now, ResolveReason::ConditionCleared))
    }

    /// The open raised alerts, by key.
    pub fn raised(&self) -> impl Iterator<Item = &Alert> {
        self.state.raised.values()
    }

    /// End a downtime early. Firing alerts it silenced are paged at the next evaluation
    /// unless another downtime covers them.
    pub fn remove_downtime(&mut self, id: u64) -> Option<Downtime> {
        self.state.downtimes.remove(&id)
    }

    /// The first downtime (by id) covering an alert of `cluster` on `instance` at `now`.
    pub fn downtime_covering(
        &self,
        now: UnixMs,
        cluster: &str,
        instance: Option<&str>,
    ) -> Option<&Downtime> {
        covering(&self.state.downtimes, now, cluster, instance)
    }

    fn run(&mut self, now: UnixMs, scope: Option<&str>, observed: &Observed) -> Vec<Transition> {
        let in_scope = |c: &str| scope.is_none_or(|s| s == c);
        let targets: Vec<Target<'_>> = observed
            .instances
            .iter()
            .filter(|i| in_scope(&i.cluster))
            .map(|i| Target {
                cluster: &i.cluster,
                instance: Some(&i.instance),
                role: Some(&i.role),
                metrics: Some(&i.metrics),
                problems: &i.problems,
            })
            .chain(
                observed
                    .clusters
                    .iter()
                    .filter(|c| in_scope(&c.cluster))
                    .map(|c| Target {
                        cluster: &c.cluster,
                        instance: None,
                        role: None,
                        metrics: None,
                        problems: &c.problems,
                    }),
            )
            .collect();

        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let state = &mut self.state;
        for rule in &self.rules {
            for t in &targets {
                if matches!(rule.condition, Condition::Metric { .. }) && t.metrics.is_none() {
                    continue;
                }
                let key = alert_key(&rule.name, t.cluster, t.instance);
                // A target listed twice: the first entry wins.
                if !seen.insert(key.clone()) {
                    continue;
                }
                let hit = check(rule, t);
                step(state, now, rule, t, key, hit, &mut out);
            }
        }

        let gone: Vec<String> = state
            .alerts
            .iter()
            .filter(|(k, a)| in_scope(&a.cluster) && !seen.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(a) = state.alerts.remove(&key) {
                if a.state == AlertState::Firing {
                    let reason = if self.rules.iter().any(|r| r.name == a.rule) {
                        ResolveReason::TargetGone
                    } else {
                        ResolveReason::RuleRemoved
                    };
                    out.push(resolve(a, now, reason));
                }
            }
        }

        for a in state.alerts.values_mut() {
            if in_scope(&a.cluster)
                && a.state == AlertState::Firing
                && a.silenced
                && covering(&state.downtimes, now, &a.cluster, a.instance.as_deref()).is_none()
            {
                a.silenced = false;
                a.paged_at = Some(now);
                out.push(Transition {
                    kind: TransitionKind::DowntimeEnded,
                    alert: a.clone(),
                });
            }
        }

        state.downtimes.retain(|_, d| d.is_active(now));
        out
    }
}

fn covering<'a>(
    downtimes: &'a BTreeMap<u64, Downtime>,
    now: UnixMs,
    cluster: &str,
    instance: Option<&str>,
) -> Option<&'a Downtime> {
    downtimes
        .values()
        .find(|d| d.covers(now, cluster, instance))
}

/// Whether the rule's condition holds on the target.
fn check(rule: &Rule, t: &Target<'_>) -> Option<Hit> {
    match &rule.condition {
        Condition::Metric {
            metric,
            op,
            threshold,
            ..
        } => {
            let value = *t.metrics?.get(metric)?;
            (value.is_finite() && op.holds(value, *threshold)).then(|| Hit {
                value: Some(value),
                problems: String::new(),
            })
        }
        Condition::Problem(m) => {
            let matched: Vec<&str> = t
                .problems
                .iter()
                .filter(|p| match m {
                    ProblemMatch::Kind(k) => p.kind == k.to_string(),
                    ProblemMatch::PageWorthy => p.severity == model::Severity::Critical,
                })
                .map(|p| p.summary.as_str())
                .collect();
            (!matched.is_empty()).then(|| Hit {
                value: None,
                problems: matched.join("; "),
            })
        }
    }
}

/// Advance one (rule, target) alert.
fn step(
    state: &mut EvaluatorState,
    now: UnixMs,
    rule: &Rule,
    t: &Target<'_>,
    key: String,
    hit: Option<Hit>,
    out: &mut Vec<Transition>,
) {
    let for_ms = u64::try_from(rule.for_duration.as_millis()).unwrap_or(u64::MAX);
    let rising = matches!(rule.condition, Condition::Metric { rising: true, .. });
    let Some(hit) = hit else {
        if let Some(a) = state.alerts.remove(&key) {
            if a.state == AlertState::Firing {
                out.push(resolve(a, now, ResolveReason::ConditionCleared));
            }
        }
        return;
    };
    let summary = summary(rule, t, &hit);
    let downtimes = &state.downtimes;
    match state.alerts.get_mut(&key) {
        None => {
            let mut a = Alert {
                key: key.clone(),
                rule: rule.name.clone(),
                severity: rule.severity,
                cluster: t.cluster.to_string(),
                instance: t.instance.map(str::to_string),
                role: t.role.map(str::to_string),
                labels: rule.labels.clone(),
                summary,
                value: hit.value,
                state: AlertState::Pending,
                pending_since: now,
                window_value: if rising { hit.value } else { None },
                started_at: None,
                resolved_at: None,
                resolve_reason: None,
                silenced: false,
                paged_at: None,
            };
            if for_ms == 0 {
                fire(&mut a, now, downtimes, out);
            }
            state.alerts.insert(key, a);
        }
        Some(a) => {
            a.summary = summary;
            a.value = hit.value;
            a.role = t.role.map(str::to_string);
            if a.state == AlertState::Pending && now.saturating_sub(a.pending_since) >= for_ms {
                let recovering =
                    rising && matches!((hit.value, a.window_value), (Some(v), Some(w)) if v < w);
                if recovering {
                    // Lower than at the start of the window: start a new window from here.
                    a.pending_since = now;
                    a.window_value = hit.value;
                } else {
                    fire(a, now, downtimes, out);
                }
            }
        }
    }
}

fn fire(
    a: &mut Alert,
    now: UnixMs,
    downtimes: &BTreeMap<u64, Downtime>,
    out: &mut Vec<Transition>,
) {
    a.state = AlertState::Firing;
    a.started_at = Some(now);
    a.silenced = covering(downtimes, now, &a.cluster, a.instance.as_deref()).is_some();
    a.paged_at = (!a.silenced).then_some(now);
    out.push(Transition {
        kind: if a.silenced {
            TransitionKind::FiredSilenced
        } else {
            TransitionKind::Fired
        },
        alert: a.clone(),
    });
}

fn resolve(mut a: Alert, now: UnixMs, reason: ResolveReason) -> Transition {
    a.state = AlertState::Resolved;
    a.resolved_at = Some(now);
    a.resolve_reason = Some(reason);
    Transition {
        kind: TransitionKind::Resolved,
        alert: a,
    }
}

fn summary(rule: &Rule, t: &Target<'_>, hit: &Hit) -> String {
    let (metric, op, threshold) = match &rule.condition {
        Condition::Metric {
            metric,
            op,
            threshold,
            ..
        } => (Some(metric.as_str()), Some(*op), Some(*threshold)),
        Condition::Problem(_) => (None, None, None),
    };
    let lookup = |name: &str| -> Option<String> {
        Some(match name {
            "rule" => rule.name.clone(),
            "cluster" => t.cluster.to_string(),
            "instance" => t.instance.unwrap_or("-").to_string(),
            "role" => t.role.unwrap_or("-").to_string(),
            "severity" => rule.severity.to_string(),
            "metric" => metric?.to_string(),
            "op" => op?.to_string(),
            "threshold" => fmt_num(threshold?),
            "value" => fmt_num(hit.value?),
            "problems" => hit.problems.clone(),
            _ => return None,
        })
    };
    match &rule.summary {
        Some(t) => t.render(lookup),
        None => match (metric, op, threshold, hit.value) {
            (Some(m), Some(op), Some(th), Some(v)) => format!(
                "{m} {op} {} on {} ({}): {}",
                fmt_num(th),
                t.instance.unwrap_or("-"),
                t.cluster,
                fmt_num(v)
            ),
            _ if t.instance.is_some() => format!(
                "{} ({}): {}",
                t.instance.unwrap_or("-"),
                t.cluster,
                hit.problems
            ),
            _ => format!("{}: {}", t.cluster, hit.problems),
        },
    }
}

/// A number for humans: no decimals when whole, else at most three.
fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
