//! `render_html`: a DRT report as one self-contained HTML page. Inline CSS and SVG, no
//! script, no link or reference to anything outside the file; every text from a result or
//! a scenario is escaped.

use std::fmt::Write;

use super::timeline::{self, colour};
use super::{
    fmt_epoch, fmt_ms, join_arrow, judge, passed, plural, Aggregate, EventKind, FigureSource,
    RunResult, Stats, Verdict, Verified,
};
use crate::scenario::{Heal, Scenario};

/// Lost writes listed per run before "and N more" (the JSON report has them all).
const LOST_SHOWN: usize = 500;
/// Runs shown open; beyond, only failed runs are open.
const OPEN_RUNS: usize = 3;

const CSS: &str = "\
:root{color-scheme:light}\
*{box-sizing:border-box}\
body{margin:0;padding:1rem;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2329;background:#fff}\
main{max-width:62rem;margin:0 auto}\
h1{font-size:1.45rem;margin:.2rem 0 .4rem}\
h2{font-size:1.15rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #e0e0e0;padding-bottom:.2rem}\
h3{font-size:1rem;margin:1rem 0 .4rem}\
p{margin:.3rem 0}\
.muted{color:#5f6b76}\
.badge{display:inline-block;padding:.05rem .55rem;border-radius:.3rem;font-weight:700;color:#fff;letter-spacing:.03em}\
.pass{background:#1e7b34}\
.fail{background:#b3261e}\
.big{font-size:1.25rem;padding:.15rem .8rem;vertical-align:middle}\
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}\
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.3rem 0}\
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e6e6e6;vertical-align:top}\
th{background:#f5f7f9;font-weight:600}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em}\
code{word-break:break-all}\
pre{background:#f5f7f9;padding:.6rem;overflow-x:auto;border-radius:.3rem}\
details{margin:.8rem 0;border:1px solid #dde3e8;border-radius:.4rem;padding:.4rem .8rem}\
details.failed{border-color:#b3261e}\
summary{cursor:pointer;font-weight:600;padding:.2rem 0}\
svg.timeline{display:block;width:100%;min-width:560px;height:auto}\
.legend{font-size:.8rem;margin:.3rem 0}\
.legend span{margin-right:.8rem;white-space:nowrap}\
.sw{display:inline-block;width:.75em;height:.75em;border-radius:2px;margin-right:.3em;vertical-align:-.05em}\
footer{margin-top:2rem;font-size:.8rem;color:#5f6b76}\
@media (max-width:600px){body{padding:.6rem;font-size:14px}th,td{padding:.25rem .3rem}h1{font-size:1.2rem}}\
";

/// The report as one self-contained HTML page, readable on a phone: the overall verdict,
/// each expectation's verdict, the figures, the scenario, and per run its timeline chart,
/// verdicts, figures, lost writes (ids and GTIDs), outages, events and the servers checked.
pub fn render_html(scenario: &Scenario, runs: &[RunResult], agg: &Aggregate) -> String {
    let judged: Vec<Vec<Verdict>> = runs.iter().map(|r| judge(scenario, r)).collect();
    let pass = !runs.is_empty() && judged.iter().all(|v| passed(v));
    let cluster = runs
        .first()
        .map(|r| r.cluster.clone())
        .or_else(|| scenario.cluster.clone())
        .unwrap_or_else(|| "?".into());
    let verdict_word = if pass { "PASS" } else { "FAIL" };

    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>DRT {}: {verdict_word}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&scenario.name)
    );

    // Header.
    let _ = write!(
        h,
        "<h1>DRT <code>{}</code> {}</h1>\n<p>{}</p>\n<p class=\"muted\">cluster <code>{}</code> \
         · {} run{}{}</p>\n",
        esc(&scenario.name),
        badge(pass, true),
        esc(&scenario.description),
        esc(&cluster),
        runs.len(),
        plural(runs.len() as u64),
        runs.first()
            .map(|r| format!(" · started {}", fmt_epoch(r.started_ms)))
            .unwrap_or_default(),
    );

    // Verdicts over every run.
    h.push_str("<h2>Verdicts</h2>\n");
    if runs.is_empty() {
        h.push_str("<p><span class=\"badge fail\">FAIL</span> no run to judge.</p>\n");
    } else {
        h.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>Expectation</th><th>Verdict</th>\
             <th>Detail</th></tr></thead><tbody>\n",
        );
        for (j, v) in judged[0].iter().enumerate() {
            let results: Vec<&Verdict> = judged.iter().filter_map(|vs| vs.get(j)).collect();
            let ok = results.iter().filter(|v| v.pass).count();
            let all = ok == runs.len();
            let detail = if runs.len() == 1 {
                esc(&v.detail)
            } else {
                let mut d = format!("passed in {ok} of {} runs", runs.len());
                if let Some((i, f)) = results.iter().enumerate().find(|(_, v)| !v.pass) {
                    let _ = write!(d, "; run {}: {}", i + 1, f.detail);
                }
                esc(&d)
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{detail}</td></tr>",
                esc(&v.expectation),
                badge(all, false)
            );
        }
        h.push_str("</tbody></table></div>\n");
    }

    // Figures.
    h.push_str("<h2>Figures</h2>\n");
    if runs.len() == 1 {
        figures_table(&mut h, &runs[0]);
    } else {
        h.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>Figure</th><th class=\"num\">p50</th>\
             <th class=\"num\">p95</th><th class=\"num\">max</th><th class=\"num\">runs</th>\
             </tr></thead><tbody>\n",
        );
        for (name, s) in [
            ("Client RTO (longest outage)", agg.rto),
            ("Detection", agg.detection),
            ("Failover duration", agg.failover),
            ("Fault to new primary writable", agg.writable),
        ] {
            stats_row(&mut h, name, s);
        }
        h.push_str("</tbody></table></div>\n");
        let _ = writeln!(
            h,
            "<div class=\"scroll\"><table><tbody>{}{}{}{}{}{}{}</tbody></table></div>",
            row("Lost writes (all runs)", &agg.lost_total.to_string()),
            row(
                "Writes acknowledged by the old primary after the new one opened (all runs)",
                &agg.stale_acks_total.to_string()
            ),
            row(
                "Acknowledged writes (all runs)",
                &agg.acked_total.to_string()
            ),
            row(
                "In-doubt writes (all runs)",
                &agg.in_doubt_total.to_string()
            ),
            row("Failovers (all runs)", &agg.failovers_total.to_string()),
            row("Aborted runs", &agg.aborted.to_string()),
            row("Unverified runs", &agg.unverified.to_string()),
        );
    }

    scenario_section(&mut h, scenario);

    // Runs.
    h.push_str("<h2>Runs</h2>\n");
    for (i, (r, verdicts)) in runs.iter().zip(&judged).enumerate() {
        run_section(&mut h, i + 1, r, verdicts, runs.len());
    }

    h.push_str(
        "<footer>Made by dbfleet's disaster-recovery tests. This page is self-contained: no \
         script and nothing loaded from elsewhere. Times are from the load's start; the \
         shaded bands are client-side outages, the grey area the acknowledged-write rate.\
         </footer>\n</main>\n</body>\n</html>\n",
    );
    h
}

fn run_section(h: &mut String, n: usize, r: &RunResult, verdicts: &[Verdict], runs: usize) {
    let ok = passed(verdicts);
    let open = if runs <= OPEN_RUNS || !ok {
        " open"
    } else {
        ""
    };
    let class = if ok { "" } else { " class=\"failed\"" };
    let _ = writeln!(
        h,
        "<details{class}{open}><summary>Run {n} {} · RTO {} · {} lost · {}</summary>",
        badge(ok, false),
        esc(&fmt_ms(r.figures.rto_ms)),
        r.lost.len(),
        esc(&fmt_epoch(r.started_ms)),
    );
    if let Some(reason) = &r.aborted {
        let _ = writeln!(
            h,
            "<p><span class=\"badge fail\">ABORTED</span> {}</p>",
            esc(reason)
        );
    }

    h.push_str("<h3>Timeline</h3>\n<div class=\"scroll\">");
    h.push_str(&timeline::svg(r, n));
    h.push_str("</div>\n<p class=\"legend\">");
    let mut kinds: Vec<EventKind> = r.timeline.iter().map(|e| e.kind).collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        let _ = write!(
            h,
            "<span><i class=\"sw\" style=\"background:{}\"></i>{}</span>",
            colour(k),
            esc(k.name())
        );
    }
    h.push_str(
        "<span><i class=\"sw\" style=\"background:#d32f2f;opacity:.35\"></i>outage</span>\
         <span><i class=\"sw\" style=\"background:#90a4ae\"></i>acknowledged writes/s</span>\
         </p>\n",
    );

    h.push_str(
        "<h3>Verdicts</h3>\n<div class=\"scroll\"><table><thead><tr><th>Expectation</th>\
         <th>Verdict</th><th>Detail</th></tr></thead><tbody>\n",
    );
    for v in verdicts {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&v.expectation),
            badge(v.pass, false),
            esc(&v.detail)
        );
    }
    h.push_str("</tbody></table></div>\n");

    if runs > 1 {
        h.push_str("<h3>Figures</h3>\n");
        figures_table(h, r);
    }

    let _ = writeln!(h, "<h3>Lost writes: {}</h3>", r.lost.len());
    match (&r.verification, r.lost.is_empty()) {
        (Verified::NotChecked { reason }, _) => {
            let _ = writeln!(
                h,
                "<p><span class=\"badge fail\">UNKNOWN</span> the writes could not be verified: \
                 {}</p>",
                esc(reason)
            );
        }
        (Verified::Checked { writer, .. }, true) => {
            let _ = writeln!(
                h,
                "<p>Every acknowledged write is on <code>{}</code>.</p>",
                esc(&writer.to_string())
            );
        }
        (Verified::Checked { writer, .. }, false) => {
            let _ = writeln!(
                h,
                "<p>Acknowledged, but missing on <code>{}</code>:</p>",
                esc(&writer.to_string())
            );
            h.push_str(
                "<div class=\"scroll\"><table><thead><tr><th class=\"num\">id</th><th>GTID</th>\
                 <th>acknowledged by</th><th class=\"num\">writer</th><th class=\"num\">at</th>\
                 </tr></thead><tbody>\n",
            );
            for w in r.lost.iter().take(LOST_SHOWN) {
                let _ = writeln!(
                    h,
                    "<tr><td class=\"num\"><code>{}</code></td><td><code>{}</code></td>\
                     <td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">+{}</td></tr>",
                    w.id,
                    esc(w.gtid.as_deref().unwrap_or("unknown")),
                    esc(&w.server.to_string()),
                    w.writer,
                    esc(&fmt_ms(w.acked_at_ms))
                );
            }
            h.push_str("</tbody></table></div>\n");
            if r.lost.len() > LOST_SHOWN {
                let _ = writeln!(
                    h,
                    "<p class=\"muted\">and {} more (all are in the JSON report)</p>",
                    r.lost.len() - LOST_SHOWN
                );
            }
        }
    }

    let _ = writeln!(h, "<h3>Outages: {}</h3>", r.load.outages.len());
    if !r.load.outages.is_empty() {
        h.push_str(
            "<div class=\"scroll\"><table><thead><tr><th class=\"num\">from</th>\
             <th class=\"num\">to</th><th class=\"num\">length</th><th>primary</th>\
             <th class=\"num\">writers</th></tr></thead><tbody>\n",
        );
        for w in &r.load.outages {
            let moved = match (&w.from, &w.to) {
                (Some(a), Some(b)) if a != b => format!("{a} → {b}"),
                (Some(a), _) => a.to_string(),
                (None, Some(b)) => b.to_string(),
                (None, None) => "?".into(),
            };
            let _ = writeln!(
                h,
                "<tr><td class=\"num\">+{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td><code>{}</code></td><td class=\"num\">{}</td></tr>",
                esc(&fmt_ms(w.from_ms)),
                esc(&w
                    .to_ms
                    .map_or("still open".into(), |t| format!("+{}", fmt_ms(t)))),
                esc(&fmt_ms(w.length_ms(r.load.duration_ms))),
                esc(&moved),
                w.writers.len()
            );
        }
        h.push_str("</tbody></table></div>\n");
    }

    let _ = writeln!(h, "<h3>Events: {}</h3>", r.timeline.len());
    if !r.timeline.is_empty() {
        h.push_str(
            "<div class=\"scroll\"><table><thead><tr><th class=\"num\">at</th><th>kind</th>\
             <th>what</th></tr></thead><tbody>\n",
        );
        for e in &r.timeline {
            let _ = writeln!(
                h,
                "<tr><td class=\"num\">+{}</td><td style=\"white-space:nowrap\"><i class=\"sw\" \
                 style=\"background:{}\"></i>{}</td><td>{}</td></tr>",
                esc(&fmt_ms(e.at_ms)),
                colour(e.kind),
                esc(e.kind.name()),
                esc(&e.label)
            );
        }
        h.push_str("</tbody></table></div>\n");
    }

    if let Verified::Checked { instances, .. } = &r.verification {
        h.push_str(
            "<h3>Servers checked</h3>\n<div class=\"scroll\"><table><thead><tr><th>server</th>\
             <th class=\"num\">rows</th><th class=\"num\">acknowledged missing</th>\
             <th class=\"num\">in-doubt present</th><th>note</th></tr></thead><tbody>\n",
        );
        for (i, c) in instances.iter().enumerate() {
            let mut note = match (&c.error, c.reachable, i) {
                (Some(e), _, _) => format!("unreachable: {e}"),
                (None, false, _) => "unreachable".into(),
                (None, true, 0) => "primary".into(),
                (None, true, _) if c.missing > 0 => "behind or diverged".into(),
                _ => String::new(),
            };
            if let Some(first) = &c.retried {
                if !note.is_empty() {
                    note.push_str("; ");
                }
                note.push_str(&format!("read again after: {first}"));
            }
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&c.addr.to_string()),
                c.rows,
                c.missing,
                c.present_in_doubt,
                esc(&note)
            );
        }
        h.push_str("</tbody></table></div>\n");
    }

    if !r.load.failure_reasons.is_empty() {
        h.push_str("<h3>Failed attempts by reason</h3>\n<div class=\"scroll\"><table><tbody>\n");
        for (reason, n) in &r.load.failure_reasons {
            h.push_str(&row(reason, &n.to_string()));
        }
        h.push_str("</tbody></table></div>\n");
    }
    h.push_str("</details>\n");
}

fn figures_table(h: &mut String, r: &RunResult) {
    let f = &r.figures;
    let client_only = f.source == FigureSource::ClientOnly;
    let unmeasured = if client_only {
        "not measured (no control-plane events)"
    } else {
        "none"
    };
    let rto = if f.rto_open {
        format!("{} (still open when the load ended)", fmt_ms(f.rto_ms))
    } else {
        fmt_ms(f.rto_ms)
    };
    let primaries = if f.primaries.is_empty() {
        "none".to_string()
    } else {
        join_arrow(&f.primaries)
    };
    let _ = writeln!(
        h,
        "<div class=\"scroll\"><table><tbody>{}{}{}{}{}{}{}{}{}{}{}{}{}</tbody></table></div>",
        row("Client RTO (longest outage)", &rto),
        row(
            "Fault to new primary writable",
            &f.writable_ms.map_or("no new primary".into(), fmt_ms)
        ),
        row(
            "Acknowledged by the old primary after the new one opened",
            &r.stale.acked_after_open.to_string()
        ),
        row(
            "Detection (first fault to detection)",
            &f.detection_ms.map_or(unmeasured.into(), fmt_ms)
        ),
        row(
            "Failover duration",
            &f.failover_ms.map_or(unmeasured.into(), fmt_ms)
        ),
        row("Failovers", &f.failovers.to_string()),
        row("Primary (as clients saw it)", &primaries),
        row("Lost writes", &r.lost.len().to_string()),
        row("Acknowledged writes", &r.load.acked.to_string()),
        row(
            "In-doubt writes (never counted lost)",
            &r.load.in_doubt.to_string()
        ),
        row("Failed attempts", &r.load.failed_attempts.to_string()),
        row(
            "Load",
            &format!(
                "{} writer{} for {}",
                r.load.writers,
                plural(r.load.writers as u64),
                fmt_ms(r.load.duration_ms)
            )
        ),
        row(
            "Figures from",
            if client_only {
                "clients only"
            } else {
                "clients and the control plane's events"
            }
        ),
    );
}

fn stats_row(h: &mut String, name: &str, s: Option<Stats>) {
    match s {
        Some(s) => {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(name),
                esc(&fmt_ms(s.p50_ms)),
                esc(&fmt_ms(s.p95_ms)),
                esc(&fmt_ms(s.max_ms)),
                s.samples
            );
        }
        None => {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td colspan=\"4\" class=\"muted\">not measured</td></tr>",
                esc(name)
            );
        }
    }
}

fn scenario_section(h: &mut String, s: &Scenario) {
    h.push_str("<h2>Scenario</h2>\n");
    let _ = writeln!(
        h,
        "<div class=\"scroll\"><table><tbody>{}{}{}</tbody></table></div>",
        row(
            "Load",
            &format!(
                "{} writer{}, {} for {}",
                s.load.writers,
                plural(s.load.writers as u64),
                if s.load.rate_per_s == 0 {
                    "as fast as possible".to_string()
                } else {
                    format!("{} writes/s", s.load.rate_per_s)
                },
                fmt_ms(s.load.duration.as_millis() as u64)
            )
        ),
        row(
            "Guardrail",
            &format!(
                "aborted after {}",
                fmt_ms(s.max_duration.as_millis() as u64)
            )
        ),
        row(
            "Target cluster in the file",
            s.cluster.as_deref().unwrap_or("none")
        ),
    );
    if !s.faults.is_empty() {
        h.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>#</th><th>fault</th><th>target</th>\
             <th class=\"num\">at</th><th>healed</th></tr></thead><tbody>\n",
        );
        for (i, f) in s.faults.iter().enumerate() {
            let healed = match f.heal {
                Heal::After(d) => format!("+{}", fmt_ms((f.at + d).as_millis() as u64)),
                Heal::AtLoadEnd => "when the load ends".into(),
                Heal::Nothing => "nothing to heal".into(),
            };
            let _ = writeln!(
                h,
                "<tr><td>{i}</td><td><code>{}</code></td><td><code>{}</code></td>\
                 <td class=\"num\">+{}</td><td>{}</td></tr>",
                esc(&f.kind.to_string()),
                esc(&f.target.to_string()),
                esc(&fmt_ms(f.at.as_millis() as u64)),
                esc(&healed)
            );
        }
        h.push_str("</tbody></table></div>\n");
    }
    let _ = writeln!(
        h,
        "<details><summary>Scenario file</summary><pre>{}</pre></details>",
        esc(&s.to_toml())
    );
}

fn row(name: &str, value: &str) -> String {
    format!("<tr><th>{}</th><td>{}</td></tr>", esc(name), esc(value))
}

fn badge(pass: bool, big: bool) -> &'static str {
    match (pass, big) {
        (true, false) => "<span class=\"badge pass\">PASS</span>",
        (false, false) => "<span class=\"badge fail\">FAIL</span>",
        (true, true) => "<span class=\"badge pass big\">PASS</span>",
        (false, true) => "<span class=\"badge fail big\">FAIL</span>",
    }
}

/// Escape text for HTML and SVG, in element content and in quoted attributes.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }
}
