//! Sandbox start-up (`dbfleet bench sandbox`): time `sandbox up` (make, start, replicate)
//! and `sandbox down` of fresh sandboxes.

use std::time::{Duration, Instant};

use sandbox::{Sandbox, UpOptions};
use serde::Serialize;

/// What `bench sandbox` prints.
#[derive(Clone, Debug, Serialize)]
pub struct SandboxFigures {
    pub runs: usize,
    pub members: usize,
    pub up_p50_s: f64,
    pub up_max_s: f64,
    pub down_p50_s: f64,
    pub down_max_s: f64,
}

/// Bring up and down `runs` sandboxes of a primary (on `base_port`) and `replicas`, in a
/// temporary directory removed after; progress on stderr unless `quiet`.
pub async fn run(
    runs: usize,
    replicas: usize,
    base_port: u16,
    quiet: bool,
) -> anyhow::Result<SandboxFigures> {
    let root = crate::temp_root();
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let name = format!("bench{i}");
        let opts = UpOptions {
            name: name.clone(),
            replicas,
            semi_sync: false,
            base_port,
            root: root.clone(),
            tuning: Default::default(),
        };
        let t = Instant::now();
        let result = Sandbox::up(&opts).await;
        ups.push(t.elapsed());
        let t = Instant::now();
        Sandbox::down(&root, &name)?;
        downs.push(t.elapsed());
        result?;
        if !quiet {
            eprintln!(
                "run {}/{runs}: up {:.2}s down {:.2}s",
                i + 1,
                ups[i].as_secs_f64(),
                downs[i].as_secs_f64()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    let (up_p50_s, up_max_s) = p50_max(ups);
    let (down_p50_s, down_max_s) = p50_max(downs);
    Ok(SandboxFigures {
        runs,
        members: replicas + 1,
        up_p50_s,
        up_max_s,
        down_p50_s,
        down_max_s,
    })
}

fn p50_max(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let p50 = v.get(v.len() / 2).copied().unwrap_or_default();
    let max = v.last().copied().unwrap_or_default();
    (p50.as_secs_f64(), max.as_secs_f64())
}
