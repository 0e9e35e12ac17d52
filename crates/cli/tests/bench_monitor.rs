//! `dbfleet bench monitor` at CI size, so the benchmark cannot rot: a small simulated fleet,
//! a short window, and checks that the figures are there and that probes happened. No
//! assertion on speed: the figures of record are run by hand (docs/BENCHMARKS.md).

use std::process::Command;

#[test]
fn bench_monitor_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_dbfleet"))
        .args([
            "bench",
            "monitor",
            "--instances",
            "50",
            "--interval",
            "1s",
            "--duration",
            "3s",
            "--hang-fraction",
            "0.1",
            "--first-ip",
            "127.1.210.1",
            "--port",
            "3307",
            "--json",
        ])
        .output()
        .expect("run dbfleet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench monitor failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let f: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    for field in [
        "target_probes_per_s",
        "probes_per_s",
        "healthy_observes_per_s",
        "missed_intervals",
        "servers_with_misses",
        "max_gap_ms",
        "probe_latency_p50_ms",
        "probe_latency_p99_ms",
        "control_plane_cpu_cores",
        "control_plane_rss_peak_mib",
        "sim_cpu_cores",
        "rounds",
        "monitor_stats",
        "method",
    ] {
        assert!(f.get(field).is_some(), "no {field} in {f:#}");
    }
    // 50 rounds up to 17 clusters of 3; 10% of them hang.
    assert_eq!(f["instances"], 51);
    assert_eq!(f["hung"], 5);
    assert_eq!(f["target_probes_per_s"], 51.0);
    assert!(f["probes_per_s"].as_f64().unwrap() > 0.0, "{f:#}");
    assert!(f["healthy_observes_per_s"].as_f64().unwrap() > 0.0, "{f:#}");
    assert!(f["probe_latency_p50_ms"].as_f64().unwrap() > 0.0, "{f:#}");
    assert!(
        f["control_plane_rss_peak_mib"].as_f64().unwrap() > 0.0,
        "{f:#}"
    );
    assert_eq!(
        f["sim_unknown_statements"], 0,
        "the probe sent what sim does not know"
    );
}
