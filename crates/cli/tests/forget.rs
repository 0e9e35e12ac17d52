//! The config is the source of truth for declared instances: one removed from the config is
//! forgotten at the next start (no probing, its problems cleared, an `instance_forgotten`
//! event), on real servers and a real daemon.

mod common;

use std::time::Duration;

use common::daemon::{test_config, Daemon, StartOpts};
use common::TestSandbox;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_removed_from_the_config_is_forgotten_at_restart() {
    let sb = TestSandbox::up("forget", 24730, &["--replicas", "2"]);
    let cfg = test_config(&sb, 24739, |t| t);
    let m3 = sb.addr("m3").to_string();
    let mut d = Daemon::start(&cfg, 24739).await;

    // m3 dies while declared: an open problem on it.
    sb.member_cmd("stop", "m3");
    d.wait_problem("forget", "UnreachableReplica", &m3, WAIT)
        .await;
    assert_eq!(d.terminate(), Some(0), "{}", d.log_text());

    // The operator removes it from the config and restarts the daemon.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let block = format!("[[cluster.instance]]\naddr = \"{m3}\"\npromotion = \"neutral\"\n");
    assert!(text.contains(&block), "{text}");
    let text = text
        .replace(&block, "")
        .replace("expected_replicas = 2", "expected_replicas = 1");
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start_with(
        &cfg,
        24739,
        StartOpts {
            append_log: true,
            ..Default::default()
        },
    )
    .await;

    d.wait_cleared("forget", "UnreachableReplica", &m3, WAIT)
        .await;
    let topology = d.get("/api/v1/clusters/forget/topology").await;
    let nodes: Vec<&str> = topology["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["addr"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 2, "{topology}");
    assert!(!nodes.contains(&m3.as_str()), "{topology}");
    let instances = d.get("/api/v1/instances?cluster=forget").await.to_string();
    assert!(!instances.contains(&m3), "{instances}");
    assert!(
        d.problems("forget").await.iter().all(|(_, i)| i != &m3),
        "no problem of m3 stays open"
    );
    let events = d.get("/api/v1/events?cluster=forget&limit=1000").await;
    let forgotten = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "instance_forgotten" && e["instance"] == m3.as_str())
        .count();
    assert_eq!(forgotten, 1, "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_instance_unreachable_too_long_is_forgotten() {
    let sb = TestSandbox::up("ageout", 24740, &["--replicas", "2"]);
    let m3 = sb.addr("m3").to_string();
    let block = format!("[[cluster.instance]]\naddr = \"{m3}\"\npromotion = \"neutral\"\n");
    let cfg = test_config(&sb, 24749, |t| {
        assert!(t.contains(&block), "{t}");
        t.replace(&block, "") + "\n[monitor]\nforget_unreachable_after = \"2s\"\n"
    });
    let d = Daemon::start(&cfg, 24749).await;
    // m3 replicates from the primary without being declared: discovered.
    d.wait_problem("ageout", "UnknownInstance", &m3, WAIT).await;

    sb.member_cmd("stop", "m3");
    let deadline = std::time::Instant::now() + WAIT;
    let event = loop {
        let events = d.get("/api/v1/events?cluster=ageout&limit=1000").await;
        let found = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "instance_forgotten" && e["instance"] == m3.as_str())
            .cloned();
        if let Some(e) = found {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{m3} not forgotten: {events}\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(event["data"]["reason"], "unreachable", "{event}");
    assert!(
        event["data"]["unreachable_for_s"].as_u64().unwrap() >= 2,
        "{event}"
    );
    // Gone from the store and the analysis: its problems clear.
    for kind in ["UnreachableReplica", "UnknownInstance"] {
        d.wait_cleared("ageout", kind, &m3, WAIT).await;
    }
    let instances = d.get("/api/v1/instances?cluster=ageout").await.to_string();
    assert!(!instances.contains(&m3), "{instances}");
    let topology = d.get("/api/v1/clusters/ageout/topology").await.to_string();
    assert!(!topology.contains(&m3), "{topology}");

    // Back as a replica: discovered again.
    sb.member_cmd("start", "m3");
    d.wait_problem("ageout", "UnknownInstance", &m3, WAIT).await;
}

/// Wait until `cluster`'s events hold an `instance_forgotten` of `addr`, and return it.
async fn wait_forgotten(d: &Daemon, cluster: &str, addr: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let events = d
            .get(&format!("/api/v1/events?cluster={cluster}&limit=1000"))
            .await;
        if let Some(e) = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "instance_forgotten" && e["instance"] == addr)
        {
            return e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} not forgotten: {events}\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbfleet_forget_drops_a_discovered_instance_and_refuses_a_declared_one() {
    use std::os::unix::fs::PermissionsExt as _;
    let sb = TestSandbox::up("forgetcmd", 24750, &["--replicas", "2"]);
    let (m2, m3) = (sb.addr("m2").to_string(), sb.addr("m3").to_string());
    let tokens = sb.root().join("tokens.txt");
    std::fs::write(&tokens, "forget-token\n").unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tokens_text = tokens.display().to_string();
    let block = format!("[[cluster.instance]]\naddr = \"{m3}\"\npromotion = \"neutral\"\n");
    let cfg = test_config(&sb, 24759, |t| {
        t.replace(&block, "").replace(
            "listen = \"127.0.0.1:24759\"",
            &format!("listen = \"127.0.0.1:24759\"\ntokens_file = {tokens_text:?}"),
        )
    });
    let d = Daemon::start(&cfg, 24759).await;
    d.wait_problem("forgetcmd", "UnknownInstance", &m3, WAIT)
        .await;
    let forget = |addr: &str| {
        common::dbfleet(&[
            "forget",
            "forgetcmd",
            addr,
            "--api",
            &d.api,
            "--token-file",
            &tokens_text,
        ])
    };

    // A declared instance is the config's: refused, naming the way.
    let out = forget(&m2);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("declared in the config"), "{err}");
    // One the cluster does not have, and a malformed address.
    let out = forget("127.0.0.1:1");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no instance 127.0.0.1:1"));
    assert_eq!(forget("nope").status.code(), Some(2));

    // m3 dies (so that discovery cannot find it again) and is forgotten on request, long
    // before forget_unreachable_after (24h).
    sb.member_cmd("stop", "m3");
    d.wait_problem("forgetcmd", "UnreachableReplica", &m3, WAIT)
        .await;
    let out = common::ok(forget(&m3));
    assert!(out.contains("forgotten"), "{out}");
    let event = wait_forgotten(&d, "forgetcmd", &m3).await;
    assert_eq!(event["data"]["reason"], "operator", "{event}");
    d.wait_cleared("forgetcmd", "UnreachableReplica", &m3, WAIT)
        .await;
    let instances = d
        .get("/api/v1/instances?cluster=forgetcmd")
        .await
        .to_string();
    assert!(!instances.contains(&m3), "{instances}");
    assert!(instances.contains(&m2), "{instances}");
}
