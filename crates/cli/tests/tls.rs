//! A failover over TLS through the real daemon: a `sandbox up --tls` set takes no plain
//! connection, and the daemon, configured by the file the sandbox writes (`tls =
//! "verify_identity"`), probes it, fails a killed primary over, and leaves the other replica
//! replicating from the new primary over verified TLS (ports 27540..27542, API 27549).

mod common;

use std::time::Duration;

use common::daemon::{test_config, Daemon};
use common::TestSandbox;
use probe::{ProbeOptions, Session};

const TOKEN: &str = "tls-test-token-0123456789";

const T: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(3),
    query_timeout: Duration::from_secs(10),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_fails_over_a_tls_only_cluster_over_verified_tls() {
    let sb = TestSandbox::up("tls-ha", 27540, &["--semi-sync", "--tls"]);
    let tokens = sb.root().join("tokens.txt");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let cfg = test_config(&sb, 27549, |t| {
        assert!(t.contains("tls = \"verify_identity\""), "{t}");
        t.replace(
            "listen = \"127.0.0.1:27549\"",
            &format!(
                "listen = \"127.0.0.1:27549\"\ntokens_file = {:?}",
                tokens.display().to_string()
            ),
        )
    });
    let d = Daemon::start(&cfg, 27549).await;
    let creds = sb.open().credentials().unwrap();
    let admin = creds.admin.credentials();
    let (m1, m2, m3) = (sb.addr("m1"), sb.addr("m2"), sb.addr("m3"));

    // The daemon sees the set over TLS: a writer, and no open problem of a reachability kind.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let c = d.get(&format!("/api/v1/clusters/{}", sb.name)).await;
        if c["writer"] == m1.to_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never saw the TLS primary: {c:#}\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    sb.open().kill("m1").unwrap();
    let ops = d
        .wait_operations(&sb.name, 1, Duration::from_secs(30))
        .await;
    let op = &ops[0];
    assert_eq!(op["state"], "succeeded", "{op:#}\n{}", d.log_text());
    let new = op["data"]["candidate"].as_str().unwrap().to_string();
    let other = if new == m2.to_string() { &m3 } else { &m2 };

    // The other replica replicates from the new primary, over verified TLS: the failover's
    // CHANGE MASTER carried the cluster's TLS.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = Session::connect(other, &admin, T).await.unwrap();
        let rows = s
            .query_rows("slave status", "SHOW SLAVE STATUS")
            .await
            .unwrap();
        s.close().await;
        let col = |k: &str| {
            rows.first()
                .and_then(|r| r.get(k).cloned().flatten())
                .unwrap_or_default()
        };
        let source = format!("{}:{}", col("Master_Host"), col("Master_Port"));
        if source == new && col("Slave_IO_Running") == "Yes" {
            assert_eq!(col("Master_SSL_Allowed"), "Yes");
            assert_eq!(col("Master_SSL_Verify_Server_Cert"), "Yes");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{other} does not replicate from {new} over TLS: source {source}, IO {}, {}",
            col("Slave_IO_Running"),
            col("Last_IO_Error")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Exactly one writable member among those alive.
    let mut writable = Vec::new();
    for a in [&m2, &m3] {
        let mut s = Session::connect(a, &admin, T).await.unwrap();
        if !s.observe().await.unwrap().read_only {
            writable.push(a.to_string());
        }
        s.close().await;
    }
    assert_eq!(writable, vec![new]);
}
