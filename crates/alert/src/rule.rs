//! Alert rules: the `[[alert.rule]]` spec as written in config, its validation (errors name
//! the field), and the validated `Rule` the evaluator runs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use model::ProblemKind;
use serde::{Deserialize, Serialize};

use crate::template::Template;
use crate::ValidationError;

/// One `[[alert.rule]]` entry as written in config. Validate it with [`RuleSpec::validate`]
/// (or [`crate::validate_rules`] for a list) to get a [`Rule`].
///
/// The condition is either a metric comparison (`metric`, `op`, `threshold`, optionally
/// `rising`) or a problem (`problem`), never both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The rule's name: letters, digits, `_`, `-` and `.`, at most 64 characters. It is part
    /// of every alert key, so renaming a rule resolves its alerts and opens new ones.
    pub name: String,
    /// `false` switches the rule off; with the name of a default rule, it switches that
    /// default off (then no other field is needed).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// The metric to compare, one of the per-instance metric keys, e.g.
    /// `heartbeat_lag_seconds`. An instance without this metric does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The comparison: `>`, `>=`, `<`, `<=`, `==` or `!=`. Needed with `metric`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    /// The value the metric is compared with. Needed with `metric`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// With `metric` and `op = ">"` or `">="`: fire only if, in addition, the value did not
    /// decrease over the `for` window ("not recovering"). Needs a `for` above zero.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rising: bool,
    /// A problem kind from the analysis (e.g. `ReplicaNotReplicating`, `DeadPrimary`), or
    /// `page` for any problem whose analysis severity is page-worthy (critical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// How long the condition must hold before the alert fires, as humantime (`"30s"`).
    /// `"0s"` (the default) fires at the first evaluation that sees it.
    #[serde(rename = "for", default, with = "humantime_serde")]
    pub for_duration: Duration,
    /// How urgent the alert is: `critical`, `error`, `warning` or `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Labels copied onto every alert of this rule and sent to notifiers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The alert's one-line summary. Placeholders: `{rule}`, `{cluster}`, `{instance}`,
    /// `{role}`, `{severity}`; with `metric` also `{metric}`, `{op}`, `{threshold}`,
    /// `{value}`; with `problem` also `{problems}` (the matched problems' summaries).
    /// `{{` and `}}` are literal braces. Without it a summary is made from the condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RuleSpec {
    /// A spec with only a name, switched on, with no condition: a start for builders and
    /// tests.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            enabled: true,
            metric: None,
            op: None,
            threshold: None,
            rising: false,
            problem: None,
            for_duration: Duration::ZERO,
            severity: None,
            labels: BTreeMap::new(),
            summary: None,
        }
    }

    /// Check every field and build the rule. Each error names its field (`threshold`,
    /// `labels.team`, …) relative to the rule; every problem is reported, not only the
    /// first. A rule with `enabled = false` still needs a valid name and is otherwise not
    /// checked; validating it is an error on `enabled` (use [`crate::validate_rules`], which
    /// drops disabled rules).
    pub fn validate(&self) -> Result<Rule, Vec<ValidationError>> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| {
            errors.push(ValidationError::new(field, message));
        };

        if let Err(m) = check_name(&self.name) {
            err("name", m);
        }
        if !self.enabled {
            err("enabled", "a disabled rule cannot be evaluated".into());
        }

        let condition = match (&self.metric, &self.problem) {
            (Some(_), Some(_)) => {
                err(
                    "problem",
                    "give either metric (with op and threshold) or problem, not both".into(),
                );
                None
            }
            (None, None) => {
                err(
                    "metric",
                    "a rule needs a condition: metric (with op and threshold) or problem".into(),
                );
                None
            }
            (Some(metric), None) => self.metric_condition(metric, &mut err),
            (None, Some(problem)) => {
                for (field, set) in [
                    ("op", self.op.is_some()),
                    ("threshold", self.threshold.is_some()),
                    ("rising", self.rising),
                ] {
                    if set {
                        err(field, "only applies to a metric rule".into());
                    }
                }
                match parse_problem(problem) {
                    Ok(p) => Some(Condition::Problem(p)),
                    Err(m) => {
                        err("problem", m);
                        None
                    }
                }
            }
        };

        if self.severity.is_none() {
            err(
                "severity",
                "required: one of critical, error, warning, info".into(),
            );
        }
        for key in self.labels.keys() {
            if !is_label_name(key) {
                err(
                    &format!("labels.{key}"),
                    "a label name is a letter or `_` followed by letters, digits or `_`".into(),
                );
            }
        }
        let summary = match (&self.summary, &condition) {
            (Some(text), Some(c)) => match Template::parse(text, c.placeholders()) {
                Ok(t) => Some(t),
                Err(m) => {
                    err("summary", m);
                    None
                }
            },
            _ => None,
        };

        match (condition, self.severity) {
            (Some(condition), Some(severity)) if errors.is_empty() => Ok(Rule {
                name: self.name.clone(),
                condition,
                for_duration: self.for_duration,
                severity,
                labels: self.labels.clone(),
                summary,
            }),
            _ => Err(errors),
        }
    }

    fn metric_condition(
        &self,
        metric: &str,
        err: &mut impl FnMut(&str, String),
    ) -> Option<Condition> {
        let mut ok = true;
        if !is_metric_name(metric) {
            err(
                "metric",
                "a metric key is lowercase letters, digits and `_`, e.g. heartbeat_lag_seconds"
                    .into(),
            );
            ok = false;
        }
        if self.op.is_none() {
            err(
                "op",
                "required with metric: one of >, >=, <, <=, ==, !=".into(),
            );
            ok = false;
        }
        match self.threshold {
            None => {
                err("threshold", "required with metric".into());
                ok = false;
            }
            Some(t) if !t.is_finite() => {
                err("threshold", "must be a finite number".into());
                ok = false;
            }
            Some(_) => {}
        }
        if self.rising {
            if self.for_duration.is_zero() {
                err(
                    "rising",
                    "needs a `for` above zero: the window over which the value must not decrease"
                        .into(),
                );
                ok = false;
            }
            if !matches!(self.op, Some(Op::Gt | Op::Ge) | None) {
                err("rising", "only applies with op = \">\" or \">=\"".into());
                ok = false;
            }
        }
        match (ok, self.op, self.threshold) {
            (true, Some(op), Some(threshold)) => Some(Condition::Metric {
                metric: metric.to_string(),
                op,
                threshold,
                rising: self.rising,
            }),
            _ => None,
        }
    }
}

/// A rule name is safe inside an alert key (`rule/cluster/instance`).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > 64 {
        return Err("at most 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("only letters, digits, `_`, `-` and `.`".into());
    }
    Ok(())
}

fn is_metric_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `page` or a problem kind's name.
fn parse_problem(s: &str) -> Result<ProblemMatch, String> {
    if s == "page" {
        return Ok(ProblemMatch::PageWorthy);
    }
    ProblemKind::ALL
        .iter()
        .find(|k| k.to_string() == s)
        .map(|k| ProblemMatch::Kind(*k))
        .ok_or_else(|| {
            let names: Vec<String> = ProblemKind::ALL.iter().map(|k| k.to_string()).collect();
            format!(
                "unknown problem {s:?}: use \"page\" or one of {}",
                names.join(", ")
            )
        })
}

/// A validated rule, ready to evaluate. Built only by [`RuleSpec::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The rule's name, part of every alert key.
    pub name: String,
    /// What must hold for the alert to be active.
    pub condition: Condition,
    /// How long the condition must hold before the alert fires.
    pub for_duration: Duration,
    /// The alert's severity.
    pub severity: Severity,
    /// Labels copied onto each alert.
    pub labels: BTreeMap<String, String>,
    /// The summary template, when the rule has one.
    pub summary: Option<Template>,
}

/// What a rule watches.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// A per-instance metric compared with a threshold.
    Metric {
        /// The metric key.
        metric: String,
        /// The comparison.
        op: Op,
        /// The value compared with.
        threshold: f64,
        /// Also require that the value did not decrease over the `for` window.
        rising: bool,
    },
    /// A problem from the analysis, on an instance or on a whole cluster.
    Problem(ProblemMatch),
}

impl Condition {
    /// The summary placeholders that make sense for this condition.
    fn placeholders(&self) -> &'static [&'static str] {
        match self {
            Condition::Metric { .. } => &[
                "rule",
                "cluster",
                "instance",
                "role",
                "severity",
                "metric",
                "op",
                "threshold",
                "value",
            ],
            Condition::Problem(_) => &[
                "rule", "cluster", "instance", "role", "severity", "problems",
            ],
        }
    }
}

/// Which problems a problem rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemMatch {
    /// Problems of one kind, whatever their severity.
    Kind(ProblemKind),
    /// Any problem whose analysis severity is page-worthy (`model::Severity::Critical`).
    PageWorthy,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }

    /// The operator as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert's severity, ordered from least to most urgent. The names are PagerDuty's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth a look in working hours.
    Warning,
    /// Needs a human soon.
    Error,
    /// Needs a human now.
    Critical,
}

impl Severity {
    /// The name as written in config and sent to notifiers.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Validate a list of `[[alert.rule]]` specs and merge them with the default rules when
/// `with_defaults` is set: a spec named like a default rule replaces it (or, with
/// `enabled = false`, removes it). Errors name `alert.rule[i].field`. Defaults come first,
/// in their order, then the other rules in the order given.
pub fn validate_rules(
    specs: &[RuleSpec],
    with_defaults: bool,
) -> Result<Vec<Rule>, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut mine: Vec<(String, Option<Rule>)> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let at = format!("alert.rule[{i}]");
        if let Some(first) = seen.insert(spec.name.as_str(), i) {
            errors.push(ValidationError::new(
                format!("{at}.name"),
                format!(
                    "duplicate rule name {:?} (also alert.rule[{first}])",
                    spec.name
                ),
            ));
            continue;
        }
        if !spec.enabled {
            if let Err(m) = check_name(&spec.name) {
                errors.push(ValidationError::new(format!("{at}.name"), m));
            }
            mine.push((spec.name.clone(), None));
            continue;
        }
        match spec.validate() {
            Ok(rule) => mine.push((spec.name.clone(), Some(rule))),
            Err(es) => errors.extend(es.into_iter().map(|e| e.under(&at))),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut out = Vec::new();
    if with_defaults {
        for default in crate::default_rules() {
            match mine.iter().position(|(n, _)| *n == default.name) {
                Some(i) => {
                    if let (_, Some(rule)) = mine.remove(i) {
                        out.push(rule);
                    }
                }
                None => out.push(default),
            }
        }
    }
    out.extend(mine.into_iter().filter_map(|(_, r)| r));
    Ok(out)
}
