//! The SVG timeline of one run: a time axis, the acknowledged-write rate, the outage windows
//! as shaded bands, and a labelled marker per event. Plain SVG, no script, no reference to
//! anything outside it.

use std::fmt::Write;

use super::html::esc;
use super::{fmt_ms, EventKind, RunResult};

/// The drawing's width in SVG units; the page scales it.
const W: f64 = 800.0;
/// Left and right margins.
const MARGIN: f64 = 24.0;
/// The height of one row of labels.
const LANE: f64 = 15.0;
/// The most rows of labels; beyond, labels overlap (the events table lists them all).
const MAX_LANES: usize = 12;
/// The height of the band that holds the outages and the write rate.
const BAND: f64 = 84.0;
/// The width of one character of an 11px label, estimated.
const CHAR: f64 = 6.1;
/// Labels longer than this are cut (the marker's tooltip has the whole text).
const LABEL_CHARS: usize = 44;

/// A marker's colour by event kind: dark enough to read as text on white.
pub(super) fn colour(kind: EventKind) -> &'static str {
    match kind {
        EventKind::FaultInjected => "#c62828",
        EventKind::FaultHealed => "#2e7d32",
        EventKind::Detected => "#e65100",
        EventKind::FailoverStarted => "#6a1b9a",
        EventKind::Promoted => "#1565c0",
        EventKind::Repointed => "#00838f",
        EventKind::Writable => "#558b2f",
        EventKind::FirstWrite => "#212121",
        EventKind::NeedsHuman => "#bf360c",
        EventKind::FailoverFailed => "#4a148c",
        EventKind::Aborted => "#880e4f",
        EventKind::Note => "#616161",
    }
}

/// A white outline under text, so a label stays legible over lines and bands.
const HALO: &str =
    r##" stroke="#ffffff" stroke-width="3" stroke-linejoin="round" paint-order="stroke""##;

const LOAD_END_COLOUR: &str = "#9e9e9e";
const OUTAGE_COLOUR: &str = "#d32f2f";
const RATE_COLOUR: &str = "#90a4ae";

struct Marker {
    t: u64,
    colour: &'static str,
    label: String,
    title: String,
    dashed: bool,
}

/// The SVG of `r`'s timeline, `index` naming it for screen readers.
pub(super) fn svg(r: &RunResult, index: usize) -> String {
    let load_end = r.load.duration_ms;
    let t_max = r
        .timeline
        .iter()
        .map(|e| e.at_ms)
        .chain(r.load.outages.iter().filter_map(|w| w.to_ms))
        .chain([load_end])
        .max()
        .unwrap_or(0)
        .max(1);
    let x = |t: u64| MARGIN + t as f64 / t_max as f64 * (W - 2.0 * MARGIN);

    let mut markers: Vec<Marker> = r
        .timeline
        .iter()
        .map(|e| Marker {
            t: e.at_ms,
            colour: colour(e.kind),
            label: cut(&e.label),
            title: format!("+{} {}: {}", fmt_ms(e.at_ms), e.kind.name(), e.label),
            dashed: matches!(e.kind, EventKind::FaultHealed | EventKind::Note),
        })
        .collect();
    markers.push(Marker {
        t: load_end,
        colour: LOAD_END_COLOUR,
        label: "load ends".into(),
        title: format!("+{} the load ends", fmt_ms(load_end)),
        dashed: true,
    });
    markers.sort_by_key(|m| m.t);

    // Give each label a row: the first whose previous label ends before this one starts.
    let mut lane_ends: Vec<f64> = Vec::new();
    let mut placed = Vec::with_capacity(markers.len());
    for m in &markers {
        let mx = x(m.t);
        let w = m.label.chars().count() as f64 * CHAR;
        let (start, anchor_end) = if mx + 3.0 + w <= W {
            (mx - 2.0, false)
        } else {
            (mx - 3.0 - w, true)
        };
        let end = if anchor_end { mx + 2.0 } else { mx + 3.0 + w };
        let lane = match lane_ends.iter().position(|e| *e + 6.0 <= start) {
            Some(i) => i,
            None if lane_ends.len() < MAX_LANES => {
                lane_ends.push(f64::MIN);
                lane_ends.len() - 1
            }
            None => lane_ends
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i),
        };
        lane_ends[lane] = end;
        placed.push((lane, anchor_end));
    }
    let lanes = lane_ends.len().max(1);
    let top = 6.0;
    let band_top = top + lanes as f64 * LANE + 8.0;
    let axis_y = band_top + BAND;
    let height = axis_y + 26.0;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="timeline" viewBox="0 0 {W} {height:.0}" role="img" aria-label="Timeline of run {index}" font-family="system-ui, sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r##"<rect x="{MARGIN}" y="{band_top:.1}" width="{:.1}" height="{BAND}" fill="#fafafa" stroke="#e0e0e0"/>"##,
        W - 2.0 * MARGIN
    );

    // Axis, ticks and grid.
    let step = tick_step(t_max);
    let mut t = 0;
    while t <= t_max {
        let tx = x(t);
        let _ = write!(
            s,
            r##"<line x1="{tx:.1}" y1="{band_top:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#eeeeee"/><line x1="{tx:.1}" y1="{axis_y:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#757575"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#424242">{}</text>"##,
            axis_y,
            axis_y + 4.0,
            axis_y + 16.0,
            esc(&tick_label(t, step))
        );
        t += step;
    }
    let _ = write!(
        s,
        r##"<line x1="{MARGIN}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#757575"/>"##,
        W - MARGIN
    );

    // The acknowledged-write rate as a step line.
    let tp = &r.throughput;
    let peak = tp.acked.iter().copied().max().unwrap_or(0);
    if peak > 0 && tp.bucket_ms > 0 {
        let scale = (BAND - 18.0) / peak as f64;
        let mut pts = format!("{:.1},{axis_y:.1}", x(0));
        for (i, n) in tp.acked.iter().enumerate() {
            let y = axis_y - *n as f64 * scale;
            let a = x(i as u64 * tp.bucket_ms);
            let b = x(((i as u64 + 1) * tp.bucket_ms).min(load_end.max(1)));
            let _ = write!(pts, " {a:.1},{y:.1} {b:.1},{y:.1}");
        }
        let _ = write!(pts, " {:.1},{axis_y:.1}", x(load_end.max(1)));
        let per_s = peak as u64 * 1000 / tp.bucket_ms;
        let _ = write!(
            s,
            r##"<polygon points="{pts}" fill="{RATE_COLOUR}" fill-opacity="0.35" stroke="{RATE_COLOUR}"><title>acknowledged writes per {} (peak {per_s}/s)</title></polygon><text x="{:.1}" y="{:.1}" fill="#607d8b">acknowledged writes/s, peak {per_s}</text>"##,
            fmt_ms(tp.bucket_ms),
            MARGIN + 4.0,
            band_top + 12.0
        );
    }

    // Outage windows.
    for w in &r.load.outages {
        let a = x(w.from_ms);
        let b = x(w.to_ms.unwrap_or(load_end)).max(a + 1.5);
        let len = fmt_ms(w.length_ms(load_end));
        let (opacity, what) = match w.to_ms {
            Some(to) => (
                0.18,
                format!("outage {len}: +{} to +{}", fmt_ms(w.from_ms), fmt_ms(to)),
            ),
            None => (
                0.32,
                format!(
                    "outage {len}: from +{}, still open when the load ended",
                    fmt_ms(w.from_ms)
                ),
            ),
        };
        let _ = write!(
            s,
            r#"<rect x="{a:.1}" y="{band_top:.1}" width="{:.1}" height="{BAND}" fill="{OUTAGE_COLOUR}" fill-opacity="{opacity}"><title>{}</title></rect>"#,
            b - a,
            esc(&what)
        );
        // At the band's foot, where no write was acknowledged, just right of its start.
        let open = if w.to_ms.is_none() { ", open" } else { "" };
        let text = if b - a > 110.0 {
            format!("outage {len}{open}")
        } else {
            len
        };
        if b - a > text.chars().count() as f64 * CHAR + 8.0 {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" fill="{OUTAGE_COLOUR}" font-weight="600"{HALO}>{}</text>"#,
                a + 5.0,
                axis_y - 9.0,
                esc(&text)
            );
        }
    }

    // Markers and their labels.
    for (m, (lane, anchor_end)) in markers.iter().zip(placed) {
        let mx = x(m.t);
        let base = top + 11.0 + lane as f64 * LANE;
        let dash = if m.dashed {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        let (tx, anchor) = if anchor_end {
            (mx - 3.0, "end")
        } else {
            (mx + 3.0, "start")
        };
        let _ = write!(
            s,
            r#"<g><title>{}</title><line x1="{mx:.1}" y1="{:.1}" x2="{mx:.1}" y2="{axis_y:.1}" stroke="{c}" stroke-width="1.5"{dash}/><circle cx="{mx:.1}" cy="{axis_y:.1}" r="3.5" fill="{c}"/><text x="{tx:.1}" y="{base:.1}" text-anchor="{anchor}" fill="{c}"{HALO}>{}</text></g>"#,
            esc(&m.title),
            base - 9.0,
            esc(&m.label),
            c = m.colour,
        );
    }
    s.push_str("</svg>");
    s
}

/// A tick step that gives at most about ten ticks over `t_max` ms.
fn tick_step(t_max: u64) -> u64 {
    const STEPS: [u64; 14] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 1_800_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| t_max / s <= 10)
        .unwrap_or_else(|| t_max.div_ceil(10).max(1))
}

fn tick_label(t: u64, step: u64) -> String {
    if step < 1000 {
        format!("{:.1}s", t as f64 / 1000.0)
    } else {
        format!("{}s", t / 1000)
    }
}

/// A label cut to [`LABEL_CHARS`] characters.
fn cut(label: &str) -> String {
    let one_line: String = label
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= LABEL_CHARS {
        one_line
    } else {
        let mut s: String = one_line.chars().take(LABEL_CHARS - 1).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_stay_few() {
        assert_eq!(tick_step(8_000), 1_000);
        assert_eq!(tick_step(10_000), 1_000);
        assert_eq!(tick_step(11_000), 2_000);
        assert_eq!(tick_step(900), 100);
        assert_eq!(tick_step(110_000), 15_000);
        assert!(10_000_000 / tick_step(10_000_000) <= 10);
        assert_eq!(tick_label(1500, 500), "1.5s");
        assert_eq!(tick_label(4000, 2000), "4s");
    }

    #[test]
    fn long_labels_are_cut() {
        let l = "x".repeat(100);
        assert_eq!(cut(&l).chars().count(), LABEL_CHARS);
        assert_eq!(cut("a\nb"), "a b");
    }
}
