//! Control characters in a server's replies never reach the terminal raw: `probe`,
//! `topology`, `problems` and `events` show them escaped, and `--json` stays valid JSON.
//! The servers are real: a `mariadbd` echoes a user name with a carriage return in its
//! access-denied error (it escapes ESC itself, but not CR), a replica's IO thread reports
//! its source's user name raw, ESC included, in `Last_IO_Error`, and a hostile peer answers the handshake
//! with an error packet full of escape sequences.

mod common;

use std::io::Write as _;
use std::process::Output;
use std::time::{Duration, Instant};

use common::daemon::{test_config, Daemon};
use common::{dbfleet, dbfleet_env, TestSandbox};

/// What a hostile server would like to reach a terminal: retitle the window, clear the
/// screen, overwrite the line, a C1 CSI.
const HOSTILE: &str = "x\r\x1b]0;pwned\x07\x1b[2J\u{9b}2Jok";

/// Whether `text` holds a character a terminal acts on (line breaks aside).
fn raw_control(text: &str) -> Option<char> {
    text.chars().find(|c| c.is_control() && *c != '\n')
}

/// Both of a run's outputs, asserting neither holds a raw control character.
fn assert_clean(what: &str, out: &Output) -> String {
    let mut all = String::from_utf8_lossy(&out.stdout).into_owned();
    all.push_str(&String::from_utf8_lossy(&out.stderr));
    if let Some(c) = raw_control(&all) {
        panic!("{what}: a raw {c:?} reached the terminal: {all:?}");
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_control_characters_are_shown_escaped() {
    let sb = TestSandbox::up("esc", 24710, &["--replicas", "1"]);
    let m1 = sb.addr("m1").to_string();
    let m2 = sb.addr("m2").to_string();

    // The server's own access-denied text echoes the user name.
    let user = HOSTILE.to_string();
    let out = dbfleet_env(
        &["probe", &m1, "--user", &user],
        &[("DBFLEET_PASSWORD", "wrong")],
    );
    assert_eq!(out.status.code(), Some(1));
    let shown = assert_clean("probe", &out);
    assert!(
        shown.contains("Access denied") && shown.contains("x\\r"),
        "{shown}"
    );
    let json = dbfleet_env(
        &["probe", &m1, "--user", &user, "--json"],
        &[("DBFLEET_PASSWORD", "wrong")],
    );
    let obs: serde_json::Value = serde_json::from_slice(&json.stdout).expect("valid JSON");
    let message = obs.to_string();
    assert!(
        message.contains("x\\r"),
        "the server's reply did carry a CR: {message}"
    );
    assert_clean("probe --json", &json);

    // A replica whose IO thread cannot log in names the user in Last_IO_Error.
    let cfg = test_config(&sb, 24719, |t| t);
    let d = Daemon::start(&cfg, 24719).await;
    let mut s = sb.session("m2").await;
    s.exec("stop", "STOP SLAVE").await.unwrap();
    let sql = format!("CHANGE MASTER TO MASTER_USER = '{HOSTILE}', MASTER_PASSWORD = 'wrong'");
    s.exec("repoint", &sql).await.unwrap();
    s.exec("start", "START SLAVE").await.unwrap();
    s.close().await;
    d.wait_problem("esc", "ReplicaNotReplicating", &m2, Duration::from_secs(30))
        .await;

    let api = d.api.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let topology = loop {
        let out = dbfleet(&["topology", "esc", "--api", &api]);
        let shown = assert_clean("topology", &out);
        if shown.contains("IO error") {
            break shown;
        }
        assert!(Instant::now() < deadline, "no IO error shown: {shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(topology.contains("x\\r"), "{topology}");
    let json = dbfleet(&["topology", "esc", "--api", &api, "--json"]);
    assert_clean("topology --json", &json);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("valid JSON");
    let io_error = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["addr"] == m2.as_str())
        .and_then(|n| n["last_io_error"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        io_error.contains('\r') && io_error.contains("\x1b]0;pwned\x07"),
        "the replica's own error text carries the CR and the escape sequences raw: \
         {io_error:?}"
    );
    assert!(topology.contains("\\x1b]0;pwned\\x07"), "{topology}");

    for args in [
        vec!["problems", "esc"],
        vec!["problems", "esc", "--json"],
        vec!["events", "--cluster", "esc"],
        vec!["events", "--cluster", "esc", "--json"],
    ] {
        let mut a = args.clone();
        a.extend(["--api", &api]);
        let out = dbfleet(&a);
        assert!(out.status.success(), "{args:?}");
        let shown = assert_clean(&args.join(" "), &out);
        if args == ["problems", "esc"] {
            assert!(shown.contains("x\\r"), "{args:?}: {shown}");
        }
        if args.contains(&"--json") {
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("valid JSON");
        }
    }
}

/// A peer that answers the connection with an error packet whose text is escape
/// sequences: `dbfleet probe` shows them escaped, in its text and its JSON.
#[test]
fn a_hostile_peers_error_packet_is_shown_escaped() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            let mut payload = vec![0xff, 0x10, 0x04]; // ERR, errno 1040
            payload.extend_from_slice(HOSTILE.as_bytes());
            let len = payload.len() as u32;
            let mut packet = len.to_le_bytes()[..3].to_vec();
            packet.push(0);
            packet.extend(payload);
            let _ = conn.write_all(&packet);
        }
    });
    let env = [("DBFLEET_PASSWORD", "x")];
    let out = dbfleet_env(&["probe", &addr, "--user", "u"], &env);
    assert_eq!(out.status.code(), Some(1));
    let shown = assert_clean("probe", &out);
    assert!(shown.contains("\\x1b]0;pwned\\x07"), "{shown}");
    let out = dbfleet_env(&["probe", &addr, "--user", "u", "--json"], &env);
    assert_clean("probe --json", &out);
    let obs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert!(
        obs.to_string().contains("\\u001b]0;pwned"),
        "the text is kept, escaped: {obs}"
    );
    server.join().unwrap();
}
