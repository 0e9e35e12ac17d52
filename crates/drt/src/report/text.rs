//! `render_text`: a DRT report as plain text for the terminal.

use std::fmt::Write;

use super::{fmt_epoch, fmt_ms, judge, passed, plural, Aggregate, RunResult, Stats, Verdict};
use crate::scenario::Scenario;

/// Lost writes listed per run before "and N more".
const LOST_SHOWN: usize = 20;

/// The report as text: the overall verdict, then per run its verdicts and figures (all
/// verdicts and the timeline for a single run; only failed verdicts when there are several),
/// then, for several runs, each expectation's pass count and the aggregate figures.
pub fn render_text(scenario: &Scenario, runs: &[RunResult], agg: &Aggregate) -> String {
    let judged: Vec<Vec<Verdict>> = runs.iter().map(|r| judge(scenario, r)).collect();
    let pass = !runs.is_empty() && judged.iter().all(|v| passed(v));
    let cluster = runs
        .first()
        .map(|r| r.cluster.as_str())
        .or(scenario.cluster.as_deref())
        .unwrap_or("?");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "DRT {} on {cluster}: {} ({} run{})",
        scenario.name,
        if pass { "PASS" } else { "FAIL" },
        runs.len(),
        plural(runs.len() as u64)
    );
    let _ = writeln!(out, "{}", scenario.description);

    let single = runs.len() == 1;
    for (i, (r, verdicts)) in runs.iter().zip(&judged).enumerate() {
        let _ = writeln!(
            out,
            "\nrun {} at {}: {}",
            i + 1,
            fmt_epoch(r.started_ms),
            if passed(verdicts) { "PASS" } else { "FAIL" }
        );
        for v in verdicts.iter().filter(|v| single || !v.pass) {
            let _ = writeln!(
                out,
                "  {}  {}: {}",
                if v.pass { "PASS" } else { "FAIL" },
                v.expectation,
                one_line(&v.detail)
            );
        }
        let f = &r.figures;
        let _ = writeln!(
            out,
            "  RTO {}{} · detection {} · failover {} · fault→writable {} · failovers {} · \
             acked {} · in doubt {} · failed attempts {} · lost {} · stale acks {} (late {}) · \
             two writable {} (mute {})",
            fmt_ms(f.rto_ms),
            if f.rto_open { " (still open)" } else { "" },
            f.detection_ms.map_or("n/a".into(), fmt_ms),
            f.failover_ms.map_or("n/a".into(), fmt_ms),
            f.writable_ms.map_or("n/a".into(), fmt_ms),
            f.failovers,
            r.load.acked,
            r.load.in_doubt,
            r.load.failed_attempts,
            r.lost.len(),
            r.stale.acked_after_open,
            r.stale.late_after_open,
            r.load.split_brain.rounds + r.load.split_brain.guard_rounds,
            r.load.split_brain.guard_mute_rounds + r.load.split_brain.mute_rounds
        );
        if single {
            let _ = writeln!(out, "  timeline:");
            for e in &r.timeline {
                let _ = writeln!(
                    out,
                    "    +{:>8}  {:<16}  {}",
                    fmt_ms(e.at_ms),
                    e.kind.name(),
                    one_line(&e.label)
                );
            }
        }
        if !r.lost.is_empty() {
            let _ = writeln!(out, "  lost writes:");
            for w in r.lost.iter().take(LOST_SHOWN) {
                let _ = writeln!(
                    out,
                    "    id {}  GTID {}  acknowledged by {} (writer {}) at +{}",
                    w.id,
                    w.gtid.as_deref().unwrap_or("unknown"),
                    w.server,
                    w.writer,
                    fmt_ms(w.acked_at_ms)
                );
            }
            if r.lost.len() > LOST_SHOWN {
                let _ = writeln!(out, "    and {} more", r.lost.len() - LOST_SHOWN);
            }
        }
    }

    if runs.len() > 1 {
        let _ = writeln!(out, "\nexpectations over {} runs:", runs.len());
        for (j, v) in judged[0].iter().enumerate() {
            let ok = judged
                .iter()
                .filter(|vs| vs.get(j).is_some_and(|v| v.pass))
                .count();
            let _ = writeln!(
                out,
                "  {}  {}: passed in {ok} of {} runs",
                if ok == runs.len() { "PASS" } else { "FAIL" },
                v.expectation,
                runs.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "\naggregate over {} run{}:",
        agg.runs,
        plural(agg.runs as u64)
    );
    let _ = writeln!(out, "  RTO        {}", stats(agg.rto));
    let _ = writeln!(out, "  detection  {}", stats(agg.detection));
    let _ = writeln!(out, "  failover   {}", stats(agg.failover));
    let _ = writeln!(out, "  fault→writable {}", stats(agg.writable));
    let _ = writeln!(
        out,
        "  lost writes {} · stale acks {} (late {}) · acknowledged {} · in doubt {} · \
         failovers {} · aborted {} · unverified {}",
        agg.lost_total,
        agg.stale_acks_total,
        agg.late_acks_total,
        agg.acked_total,
        agg.in_doubt_total,
        agg.failovers_total,
        agg.aborted,
        agg.unverified
    );
    out
}

fn stats(s: Option<Stats>) -> String {
    match s {
        None => "not measured".into(),
        Some(s) => format!(
            "p50 {}  p95 {}  max {}  ({} sample{})",
            fmt_ms(s.p50_ms),
            fmt_ms(s.p95_ms),
            fmt_ms(s.max_ms),
            s.samples,
            plural(s.samples as u64)
        ),
    }
}

/// A label on one line, without control characters that could mess up a terminal.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
