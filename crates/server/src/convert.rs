//! Model, store and monitor types converted to the [`api::wire`] types the routes answer.

use api::wire::{ClusterSummary, Event, Evidence, Instance, Problem, Stats};
use model::Observation;
use store::{ClusterRecord, EventRecord, InstanceRecord, ProblemRecord};

/// The watch loop's counters.
pub(crate) fn stats(s: monitor::StatsSnapshot) -> Stats {
    Stats {
        started_ms: s.started_ms,
        rounds: s.rounds,
        last_round_ms: s.last_round_ms,
        probes: s.probes,
        probe_errors: s.probe_errors,
        instances: s.instances,
        fast_paths: s.fast_paths,
        fast_path_rounds: s.fast_path_rounds,
        refresh_rounds: s.refresh_rounds,
        sentinel_signals: s.sentinel_signals,
        sentinels_armed: s.sentinels_armed,
        rounds_dropped: s.rounds_dropped,
        observations_persisted: s.observations_persisted,
        observations_persist_skipped: s.observations_persist_skipped,
    }
}

/// The summary of a cluster from its record, its instances, the last observations filed
/// under it, and its open problems.
pub(crate) fn cluster_summary(
    record: &ClusterRecord,
    instance_count: usize,
    observations: &[Observation],
    open_problems: &[&ProblemRecord],
) -> ClusterSummary {
    let primary = model::analysis::find_primary(observations)
        .addr()
        .map(ToString::to_string);
    ClusterSummary {
        name: record.name.clone(),
        primary,
        writer: record.writer.as_ref().map(ToString::to_string),
        instance_count,
        reachable_count: observations.iter().filter(|o| o.state().is_some()).count(),
        open_problem_count: open_problems.len(),
        worst_severity: open_problems
            .iter()
            .map(|p| p.problem.severity)
            .max()
            .map(|s| api::wire::severity(s).to_string()),
    }
}

/// An instance record with its last observation.
pub(crate) fn instance(record: &InstanceRecord, observation: Option<Observation>) -> Instance {
    Instance {
        cluster: record.cluster.clone(),
        addr: record.addr.to_string(),
        origin: record.origin.as_str().to_string(),
        first_seen_ms: record.first_seen_ms,
        last_seen_ms: record.last_seen_ms,
        observation,
    }
}

/// A problem record.
pub(crate) fn problem(r: &ProblemRecord) -> Problem {
    let p = &r.problem;
    Problem {
        id: r.id,
        cluster: r.cluster.clone(),
        key: r.key.clone(),
        kind: p.kind.to_string(),
        instance: p.instance.as_ref().map(ToString::to_string),
        severity: api::wire::severity(p.severity).to_string(),
        summary: p.summary.clone(),
        evidence: p
            .evidence
            .iter()
            .map(|e| Evidence {
                instance: e.instance.to_string(),
                fact: e.fact.clone(),
            })
            .collect(),
        first_seen_ms: r.first_seen_ms,
        last_seen_ms: r.last_seen_ms,
        cleared_ms: r.cleared_ms,
    }
}

/// An event of the log.
pub(crate) fn event(e: EventRecord) -> Event {
    Event {
        id: e.id,
        at_ms: e.at_ms,
        cluster: e.cluster,
        instance: e.instance.map(|i| i.to_string()),
        kind: e.kind,
        level: e.level.as_str().to_string(),
        message: e.message,
        data: e.data,
    }
}
