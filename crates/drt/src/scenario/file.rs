//! The scenario file as written: raw keys with serde, converted to a [`Scenario`] and
//! validated, and back. Parse errors get the field path their line is at.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Expect, FailoverExpectation, Fault, FaultKind, Heal, LoadSpec, Scenario, ScenarioError, Target,
    DEFAULT_MAX_DURATION,
};

/// A scenario file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileScenario {
    /// See [`Scenario::name`].
    name: String,
    /// See [`Scenario::description`].
    description: String,
    /// See [`Scenario::cluster`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    /// See [`Scenario::max_duration`].
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    max_duration: Option<Duration>,
    /// See [`LoadSpec`].
    #[serde(default)]
    load: FileLoad,
    /// See [`Scenario::faults`].
    #[serde(default, rename = "fault", skip_serializing_if = "Vec::is_empty")]
    faults: Vec<FileFault>,
    /// See [`Expect`].
    #[serde(default)]
    expect: FileExpect,
}

/// `[load]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileLoad {
    /// See [`LoadSpec::writers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writers: Option<usize>,
    /// See [`LoadSpec::rate_per_s`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_per_s: Option<u32>,
    /// See [`LoadSpec::duration`].
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    duration: Option<Duration>,
    /// See [`LoadSpec::stale_client`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stale_client: Option<bool>,
    /// See [`LoadSpec::via`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    via: Option<super::LoadVia>,
}

/// One `[[fault]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileFault {
    /// See [`FaultKind`].
    kind: KindName,
    /// `primary`, `replica` or a member; see [`Target`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// See [`Fault::at`].
    #[serde(with = "duration")]
    at: Duration,
    /// See [`Heal::After`].
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    heal_after: Option<Duration>,
    /// `slow_replica` only: added latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u64>,
    /// `slow_replica` only: random extra latency in milliseconds, default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jitter_ms: Option<u64>,
    /// `delay_replica` only: the `MASTER_DELAY`, e.g. `"30s"`.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    delay: Option<Duration>,
}

/// `[expect]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileExpect {
    /// See [`Expect::failover`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failover: Option<FailoverExpectation>,
    /// See [`Expect::max_rto`].
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    max_rto: Option<Duration>,
    /// See [`Expect::lost_writes_allowed`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lost_writes_allowed: Option<u64>,
    /// See [`Expect::failovers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failovers: Option<u32>,
    /// See [`Expect::primary_changes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    primary_changes: Option<u32>,
    /// See [`Expect::max_detection`].
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    max_detection: Option<Duration>,
    /// See [`Expect::stale_acks_allowed`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stale_acks_allowed: Option<u64>,
    /// See [`Expect::needs_human`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    needs_human: Option<bool>,
}

/// A fault kind's name; the parameters of `slow_replica` are separate keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum KindName {
    KillPrimary,
    PausePrimary,
    PartitionPrimary,
    PartitionControlPlaneFromPrimary,
    KillReplica,
    StopReplicaSqlThread,
    SlowReplica,
    Switchover,
    ErrantWriteOnReplica,
    DelayReplica,
    BreakReplicaSql,
    StallReplicaStream,
    StallDisk,
    FillDisk,
}

impl TryFrom<FileScenario> for Scenario {
    type Error = ScenarioError;

    /// Convert and validate, collecting every problem.
    fn try_from(f: FileScenario) -> Result<Self, ScenarioError> {
        let mut errs = Vec::new();
        let defaults = LoadSpec::default();
        let load = LoadSpec {
            writers: f.load.writers.unwrap_or(defaults.writers),
            rate_per_s: f.load.rate_per_s.unwrap_or(defaults.rate_per_s),
            duration: f.load.duration.unwrap_or(defaults.duration),
            stale_client: f.load.stale_client.unwrap_or(defaults.stale_client),
            via: f.load.via.unwrap_or(defaults.via),
        };
        let mut faults = Vec::with_capacity(f.faults.len());
        for (i, ff) in f.faults.into_iter().enumerate() {
            let at = format!("fault[{i}]");
            let kind = match ff.kind {
                KindName::KillPrimary => FaultKind::KillPrimary,
                KindName::PausePrimary => FaultKind::PausePrimary,
                KindName::PartitionPrimary => FaultKind::PartitionPrimary,
                KindName::PartitionControlPlaneFromPrimary => {
                    FaultKind::PartitionControlPlaneFromPrimary
                }
                KindName::KillReplica => FaultKind::KillReplica,
                KindName::StopReplicaSqlThread => FaultKind::StopReplicaSqlThread,
                KindName::SlowReplica => FaultKind::SlowReplica {
                    latency: Duration::from_millis(ff.latency_ms.unwrap_or_else(|| {
                        errs.push(ScenarioError::Invalid {
                            field: format!("{at}.latency_ms"),
                            message: "slow_replica needs the latency to add, in milliseconds"
                                .into(),
                        });
                        1
                    })),
                    jitter: Duration::from_millis(ff.jitter_ms.unwrap_or(0)),
                },
                KindName::Switchover => FaultKind::Switchover,
                KindName::ErrantWriteOnReplica => FaultKind::ErrantWriteOnReplica,
                KindName::DelayReplica => FaultKind::DelayReplica {
                    delay: ff.delay.unwrap_or_else(|| {
                        errs.push(ScenarioError::Invalid {
                            field: format!("{at}.delay"),
                            message: "delay_replica needs the delay to set, e.g. delay = \"30s\""
                                .into(),
                        });
                        Duration::from_secs(1)
                    }),
                },
                KindName::BreakReplicaSql => FaultKind::BreakReplicaSql,
                KindName::StallReplicaStream => FaultKind::StallReplicaStream,
                KindName::StallDisk => FaultKind::StallDisk,
                KindName::FillDisk => FaultKind::FillDisk,
            };
            if ff.kind != KindName::DelayReplica && ff.delay.is_some() {
                errs.push(ScenarioError::Invalid {
                    field: format!("{at}.delay"),
                    message: format!("only delay_replica takes delay, not {}", kind.name()),
                });
            }
            if ff.kind != KindName::SlowReplica {
                for (key, v) in [("latency_ms", ff.latency_ms), ("jitter_ms", ff.jitter_ms)] {
                    if v.is_some() {
                        errs.push(ScenarioError::Invalid {
                            field: format!("{at}.{key}"),
                            message: format!("only slow_replica takes {key}, not {}", kind.name()),
                        });
                    }
                }
            }
            let heal = match ff.heal_after {
                Some(d) => Heal::After(d),
                None if kind.heals() => Heal::AtLoadEnd,
                None => Heal::Nothing,
            };
            faults.push(Fault {
                kind,
                target: ff
                    .target
                    .as_deref()
                    .map(Target::parse)
                    .unwrap_or_else(|| kind.default_target()),
                at: ff.at,
                heal,
            });
        }
        let defaults = Expect::default();
        let e = f.expect;
        let scenario = Scenario {
            name: f.name,
            description: f.description,
            cluster: f.cluster,
            load,
            faults,
            expect: Expect {
                max_rto: e.max_rto,
                lost_writes_allowed: e
                    .lost_writes_allowed
                    .unwrap_or(defaults.lost_writes_allowed),
                failover: e.failover.unwrap_or(defaults.failover),
                failovers: e.failovers,
                primary_changes: e.primary_changes,
                max_detection: e.max_detection,
                stale_acks_allowed: e.stale_acks_allowed.unwrap_or(defaults.stale_acks_allowed),
                needs_human: e.needs_human,
            },
            max_duration: f.max_duration.unwrap_or(DEFAULT_MAX_DURATION),
        };
        if let Err(e) = scenario.validate() {
            errs.push(e);
        }
        match ScenarioError::from_list(errs) {
            None => Ok(scenario),
            Some(e) => Err(e),
        }
    }
}

impl From<Scenario> for FileScenario {
    /// The file form, writing every value (defaults too) so the file says everything.
    fn from(s: Scenario) -> Self {
        FileScenario {
            name: s.name,
            description: s.description,
            cluster: s.cluster,
            max_duration: Some(s.max_duration),
            load: FileLoad {
                writers: Some(s.load.writers),
                rate_per_s: Some(s.load.rate_per_s),
                duration: Some(s.load.duration),
                stale_client: Some(s.load.stale_client),
                via: (s.load.via != super::LoadVia::Direct).then_some(s.load.via),
            },
            faults: s
                .faults
                .into_iter()
                .map(|f| {
                    let mut delay = None;
                    let (kind, latency_ms, jitter_ms) = match f.kind {
                        FaultKind::KillPrimary => (KindName::KillPrimary, None, None),
                        FaultKind::PausePrimary => (KindName::PausePrimary, None, None),
                        FaultKind::PartitionPrimary => (KindName::PartitionPrimary, None, None),
                        FaultKind::PartitionControlPlaneFromPrimary => {
                            (KindName::PartitionControlPlaneFromPrimary, None, None)
                        }
                        FaultKind::KillReplica => (KindName::KillReplica, None, None),
                        FaultKind::StopReplicaSqlThread => {
                            (KindName::StopReplicaSqlThread, None, None)
                        }
                        FaultKind::SlowReplica { latency, jitter } => (
                            KindName::SlowReplica,
                            Some(latency.as_millis() as u64),
                            Some(jitter.as_millis() as u64),
                        ),
                        FaultKind::Switchover => (KindName::Switchover, None, None),
                        FaultKind::ErrantWriteOnReplica => {
                            (KindName::ErrantWriteOnReplica, None, None)
                        }
                        FaultKind::DelayReplica { delay: d } => {
                            delay = Some(d);
                            (KindName::DelayReplica, None, None)
                        }
                        FaultKind::BreakReplicaSql => (KindName::BreakReplicaSql, None, None),
                        FaultKind::StallReplicaStream => (KindName::StallReplicaStream, None, None),
                        FaultKind::StallDisk => (KindName::StallDisk, None, None),
                        FaultKind::FillDisk => (KindName::FillDisk, None, None),
                    };
                    FileFault {
                        kind,
                        target: Some(f.target.to_string()),
                        at: f.at,
                        heal_after: match f.heal {
                            Heal::After(d) => Some(d),
                            Heal::AtLoadEnd | Heal::Nothing => None,
                        },
                        latency_ms,
                        jitter_ms,
                        delay,
                    }
                })
                .collect(),
            expect: FileExpect {
                failover: Some(s.expect.failover),
                max_rto: s.expect.max_rto,
                lost_writes_allowed: Some(s.expect.lost_writes_allowed),
                failovers: s.expect.failovers,
                primary_changes: s.expect.primary_changes,
                max_detection: s.expect.max_detection,
                stale_acks_allowed: Some(s.expect.stale_acks_allowed),
                needs_human: s.expect.needs_human,
            },
        }
    }
}

/// A TOML error as a `Parse` error, with its line and, when the line tells it, the field
/// path.
pub(crate) fn parse_error(text: &str, origin: &str, e: &toml::de::Error) -> ScenarioError {
    let (line, field) = match e.span() {
        Some(span) => (Some(line_of(text, span.start)), field_at(text, span.start)),
        None => (None, None),
    };
    ScenarioError::Parse {
        origin: origin.to_string(),
        line,
        field,
        message: e.message().trim().replace('\n', "; "),
    }
}

/// The 1-based line that byte `offset` of `text` is on.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The field path at byte `offset` of `text`, read from the lines: the last table header
/// before it (`[load]`, the n-th `[[fault]]`) and the key its line assigns. A best effort
/// for the plain layout scenario files have: `None` when it cannot tell.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let mut table: Option<String> = None;
    let mut arrays: std::collections::HashMap<String, usize> = Default::default();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let t = line.trim();
        let is_error_line = offset >= start && (offset < end || end == text.len());
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let name = name.0.trim().to_string();
            let n = arrays.entry(name.clone()).or_insert(0);
            table = Some(format!("{name}[{n}]"));
            *n += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split_once(']')) {
            table = Some(name.0.trim().to_string());
        } else if is_error_line {
            let key = t.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
            return match (table, key) {
                (Some(t), Some(k)) => Some(format!("{t}.{k}")),
                (None, Some(k)) => Some(k.to_string()),
                (Some(t), None) => Some(t),
                (None, None) => None,
            };
        }
        if is_error_line {
            return table;
        }
        start = end;
    }
    None
}

/// Durations are read and written as the config file does it.
pub(crate) use config::serde_duration as duration;

/// An optional [`duration`].
pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Write `Some(d)` as humantime text; `None` is skipped by the field's
    /// `skip_serializing_if`.
    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Read humantime text; absent keys are `None` through the field's `default`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_from_lines() {
        let text =
            "name = \"x\"\n[load]\nwriters = 2\n[[fault]]\nat = \"1s\"\n[[fault]]\nat = \"2x\"\n";
        let off = text.find("2x").unwrap();
        assert_eq!(field_at(text, off).as_deref(), Some("fault[1].at"));
        assert_eq!(line_of(text, off), 7);
        let off = text.find("writers").unwrap();
        assert_eq!(field_at(text, off).as_deref(), Some("load.writers"));
        assert_eq!(field_at(text, 0).as_deref(), Some("name"));
        let off = text.find("[[fault]]").unwrap();
        assert_eq!(field_at(text, off).as_deref(), Some("fault[0]"));
    }
}
