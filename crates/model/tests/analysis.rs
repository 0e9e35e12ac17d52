//! Data-driven tests of cluster-health analysis: observations built with a small builder,
//! the analysis rendered as text (`Severity Kind instance`, optionally with summary and
//! evidence) and compared with the expected text.

use std::time::Duration;

use model::analysis::{
    analyze, direct_replicas, errant_transactions, find_primary, replication_tree, severity,
    Analysis, ClusterView, PrimaryGuess,
};
use model::gtid::MariadbGtidList;
use model::{
    ClusterSpec, Flavor, GtidState, InstanceAddr, InstanceSpec, IoThreadState, Observation,
    ProbeFailure, ProbeFailureKind, ProblemKind, PromotionRule, Reachability, ReplicationStatus,
    SemiSyncState, ServerState, Severity,
};

use IoThreadState::{Connecting, No};
use ProbeFailureKind::{Auth, Refused, Timeout};

const UUID_A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
const UUID_B: &str = "8a94f357-aab4-11df-86ab-c80aa9429562";

/// `p` means `p:3306`.
fn addr(s: &str) -> InstanceAddr {
    if s.contains(':') {
        s.parse().unwrap()
    } else {
        InstanceAddr::new(s, 3306)
    }
}

/// An observation under construction.
#[derive(Clone)]
struct Obs(Observation);

/// A reachable, read-only MariaDB server with no source and empty GTID state.
fn server(a: &str) -> Obs {
    Obs(Observation {
        addr: addr(a),
        at_unix_ms: 1_000,
        duration_us: 800,
        write: None,
        reachability: Reachability::Reachable(Box::new(ServerState {
            flavor: Flavor::Mariadb,
            version: "10.11.6-MariaDB".into(),
            server_id: 0,
            read_only: true,
            log_bin: true,
            log_replica_updates: true,
            replication: None,
            gtid: GtidState::Mariadb {
                current_pos: MariadbGtidList::new(),
                binlog_pos: MariadbGtidList::new(),
                slave_pos: MariadbGtidList::new(),
                binlog_state: Default::default(),
                strict_mode: true,
            },
            semi_sync: SemiSyncState::default(),
            uptime_s: 86_400,
            threads_connected: 3,
            threads_running: 1,
            disk: None,
            metrics: None,
        })),
    })
}

/// A writable server with no source.
fn primary(a: &str) -> Obs {
    server(a).writable()
}

/// A read-only server; give it a source with [`Obs::of`].
fn replica(a: &str) -> Obs {
    server(a)
}

/// An unreachable server.
fn down(a: &str, kind: ProbeFailureKind) -> Obs {
    let message = match kind {
        Refused => "connection refused",
        Timeout => "connect timed out after 2s",
        Auth => "access denied for user 'dbfleet'",
        ProbeFailureKind::Other => "connection reset by peer",
    };
    Obs(Observation {
        addr: addr(a),
        at_unix_ms: 1_000,
        duration_us: 2_000_000,
        write: None,
        reachability: Reachability::Unreachable(ProbeFailure::new(kind, message)),
    })
}

impl Obs {
    fn state(&mut self) -> &mut ServerState {
        match &mut self.0.reachability {
            Reachability::Reachable(s) => s,
            Reachability::Unreachable(_) => panic!("unreachable observation has no state"),
        }
    }

    fn repl(&mut self) -> &mut ReplicationStatus {
        self.state()
            .replication
            .as_mut()
            .expect("call .of(source) first")
    }

    fn writable(mut self) -> Self {
        self.state().read_only = false;
        self
    }

    fn read_only(mut self) -> Self {
        self.state().read_only = true;
        self
    }

    fn id(mut self, server_id: u32) -> Self {
        self.state().server_id = server_id;
        self
    }

    fn at(mut self, unix_ms: u64) -> Self {
        self.0.at_unix_ms = unix_ms;
        self
    }

    /// Replicates from `source`, both threads running, no lag.
    fn of(mut self, source: &str) -> Self {
        self.state().replication = Some(ReplicationStatus {
            source: addr(source),
            io_thread: IoThreadState::Yes,
            sql_running: true,
            last_io_errno: 0,
            last_io_error: String::new(),
            last_sql_errno: 0,
            last_sql_error: String::new(),
            seconds_behind_source: Some(0),
            sql_delay_s: 0,
            using_gtid: true,
            received_gtid: String::new(),
            stream: Default::default(),
        });
        self
    }

    /// Sets the IO thread state; lag becomes NULL unless it is `Yes`.
    fn io(mut self, io: IoThreadState) -> Self {
        let r = self.repl();
        r.io_thread = io;
        if io != IoThreadState::Yes {
            r.seconds_behind_source = None;
        }
        self
    }

    /// The IO thread's last error.
    fn errno(mut self, errno: u32, text: &str) -> Self {
        let r = self.repl();
        r.last_io_errno = errno;
        r.last_io_error = text.into();
        self
    }

    /// The SQL thread stopped on an error.
    fn sql_error(mut self, errno: u32, text: &str) -> Self {
        let r = self.repl();
        r.sql_running = false;
        r.last_sql_errno = errno;
        r.last_sql_error = text.into();
        r.seconds_behind_source = None;
        self
    }

    fn lag(mut self, seconds: u64) -> Self {
        self.repl().seconds_behind_source = Some(seconds);
        self
    }

    fn delay(mut self, seconds: u64) -> Self {
        self.repl().sql_delay_s = seconds;
        self
    }

    /// MariaDB `gtid_binlog_state` (and the positions it implies).
    fn gtid(mut self, binlog_state: &str) -> Self {
        let state = binlog_state.parse().unwrap();
        let pos = MariadbGtidList::from_binlog_state(&state);
        self.state().gtid = GtidState::Mariadb {
            current_pos: pos.clone(),
            binlog_pos: pos.clone(),
            slave_pos: pos,
            binlog_state: state,
            strict_mode: true,
        };
        self
    }

    /// A MySQL server with GTIDs on and this `gtid_executed`.
    fn mysql(mut self, executed: &str) -> Self {
        let s = self.state();
        s.flavor = Flavor::Mysql;
        s.version = "8.0.36".into();
        s.gtid = GtidState::Mysql {
            enabled: true,
            executed: executed.parse().unwrap(),
            purged: Default::default(),
        };
        self
    }

    /// `Retrieved_Gtid_Set` / `Gtid_IO_Pos`.
    fn received(mut self, gtids: &str) -> Self {
        self.repl().received_gtid = gtids.into();
        self
    }

    /// The received stream: heartbeat count, heartbeat period and how long it has not moved
    /// (as the monitor's tracker sets it), read at `binlog.000001:4000`.
    fn stream(mut self, heartbeats: u64, period_ms: u64, stalled_ms: Option<u64>) -> Self {
        let r = self.repl();
        r.stream.received_heartbeats = Some(heartbeats);
        r.stream.heartbeat_period_ms = Some(period_ms);
        r.stream.source_log_file = "binlog.000001".into();
        r.stream.read_source_log_pos = Some(4000);
        r.stream.stalled_ms = stalled_ms;
        self
    }

    /// Semi-sync's fallback settings on a primary: `rpl_semi_sync_master_timeout` and
    /// `rpl_semi_sync_master_wait_no_slave`.
    fn fallback(mut self, timeout_ms: u64, wait_no_slave: bool) -> Self {
        let ss = &mut self.state().semi_sync;
        ss.source_timeout_ms = Some(timeout_ms);
        ss.source_wait_no_replica = Some(wait_no_slave);
        self
    }

    /// `Rpl_semi_sync_master_wait_sessions`.
    fn waiting(mut self, sessions: u64) -> Self {
        self.state().semi_sync.source_wait_sessions = sessions;
        self
    }

    /// dbfleet's heartbeat write on this server: the write in flight waiting `pending_ms`,
    /// the last completed one `since_ok_ms` ago, `failures` in a row, the last error code
    /// (`Some(0)` for a timeout). Deadline 500 ms.
    fn write(
        mut self,
        pending_ms: Option<u64>,
        since_ok_ms: Option<u64>,
        failures: u32,
        error: Option<u16>,
    ) -> Self {
        self.0.write = Some(model::WriteProbe {
            deadline_ms: 500,
            since_ok_ms,
            pending_ms,
            failures,
            last_error: error.map(|code| model::WriteFailure {
                code: (code != 0).then_some(code),
                timed_out: code == 0,
                message: match code {
                    0 => "heartbeat write timed out after 500ms".into(),
                    1021 => "Disk full (./dbfleet/heartbeat.ibd); waiting for someone to free some space...".into(),
                    _ => format!("error {code}"),
                },
            }),
            hung: 0,
        });
        self
    }

    /// Free space on the datadir: `available` of `total` MiB, on `/d` (`/dev/loop0`).
    fn disk(mut self, available_mib: u64, total_mib: u64) -> Self {
        self.state().disk = Some(model::DiskSpace {
            datadir: "/d/data/".into(),
            path: "/d".into(),
            disk: "/dev/loop0".into(),
            total_bytes: total_mib << 20,
            used_bytes: (total_mib - available_mib) << 20,
            available_bytes: available_mib << 20,
            read_at_ms: 1_000,
        });
        self
    }

    /// `Gtid_IO_Pos`, `gtid_slave_pos` and how long the applier has not moved.
    fn applying(mut self, received: &str, applied: &str, stalled_ms: Option<u64>) -> Self {
        let pos: MariadbGtidList = applied.parse().unwrap();
        if let GtidState::Mariadb { slave_pos, .. } = &mut self.state().gtid {
            *slave_pos = pos;
        }
        let r = self.repl();
        r.received_gtid = received.into();
        r.stream.apply_stalled_ms = stalled_ms;
        self
    }

    fn semi_sync(mut self, enabled: bool, active: bool, clients: u64) -> Self {
        let ss = &mut self.state().semi_sync;
        ss.source_enabled = enabled;
        ss.source_active = active;
        ss.source_clients = clients;
        self
    }
}

/// A cluster spec under construction.
struct Spec(ClusterSpec);

/// Cluster `c1` with these instances, no expected replicas, no semi-sync, max lag 10s.
fn spec(instances: &[&str]) -> Spec {
    Spec(ClusterSpec {
        name: "c1".into(),
        instances: instances
            .iter()
            .map(|a| InstanceSpec {
                addr: addr(a),
                promotion: PromotionRule::Neutral,
                site: None,
            })
            .collect(),
        expected_replicas: 0,
        semi_sync: false,
        max_lag: Duration::from_secs(10),
        stall_confirm: model::DEFAULT_STALL_CONFIRM,
        storage: Default::default(),
    })
}

impl Spec {
    fn expect(mut self, replicas: usize) -> Self {
        self.0.expected_replicas = replicas;
        self
    }

    fn semi_sync(mut self) -> Self {
        self.0.semi_sync = true;
        self
    }

    fn max_lag(mut self, seconds: u64) -> Self {
        self.0.max_lag = Duration::from_secs(seconds);
        self
    }

    fn stall_confirm(mut self, ms: u64) -> Self {
        self.0.stall_confirm = Duration::from_millis(ms);
        self
    }
}

fn observations(obs: &[Obs]) -> Vec<Observation> {
    obs.iter().map(|o| o.0.clone()).collect()
}

fn run(spec: &Spec, obs: &[Obs]) -> Analysis {
    let observations = observations(obs);
    analyze(&ClusterView {
        spec: &spec.0,
        observations: &observations,
    })
}

/// `primary: p:3306`, then one line per problem; with `evidence`, the summary and one
/// indented line per evidence.
fn render(analysis: &Analysis, evidence: bool) -> String {
    let mut out = match &analysis.primary {
        Some(p) => format!("primary: {p}\n"),
        None => "primary: none\n".to_string(),
    };
    for p in &analysis.problems {
        out += &format!("{:?} {}", p.severity, p.kind);
        if let Some(i) = &p.instance {
            out += &format!(" {i}");
        }
        if evidence {
            out += &format!(": {}", p.summary);
            for e in &p.evidence {
                out += &format!("\n  {}: {}", e.instance, e.fact);
            }
        }
        out += "\n";
    }
    out
}

/// Strips the common indentation and surrounding blank lines.
fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

fn assert_text(actual: &str, expect: &str) {
    let (actual, expect) = (actual.trim(), dedent(expect));
    assert!(
        actual == expect,
        "analysis differs\n--- expected\n{expect}\n--- actual\n{actual}\n"
    );
}

/// Checks the primary and the `(severity, kind, instance)` of each problem.
fn check(spec: &Spec, obs: &[Obs], expect: &str) {
    assert_text(&render(&run(spec, obs), false), expect);
}

/// Like [`check`], with summaries and evidence.
fn check_evidence(spec: &Spec, obs: &[Obs], expect: &str) {
    assert_text(&render(&run(spec, obs), true), expect);
}

#[test]
fn healthy_cluster_has_no_problems() {
    check(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[
            primary("p").id(1).gtid("0-1-100"),
            replica("r1").of("p").id(2).gtid("0-1-100"),
            replica("r2").of("p").id(3).gtid("0-1-98").lag(1),
        ],
        "primary: p:3306",
    );
}

#[test]
fn no_observations_no_problems() {
    assert_eq!(run(&spec(&["p"]), &[]), Analysis::default());
}

#[test]
fn chain_replica_is_normal_and_counts_toward_expected() {
    let obs = [
        primary("p").id(1).gtid("0-1-100"),
        replica("r1").of("p").id(2).gtid("0-1-100"),
        replica("r2").of("r1").id(3).gtid("0-1-100"),
    ];
    check(&spec(&["p", "r1", "r2"]).expect(2), &obs, "primary: p:3306");

    let all = observations(&obs);
    assert_eq!(find_primary(&all), PrimaryGuess::Reachable(addr("p")));
    let addrs = |v: Vec<&Observation>| v.iter().map(|o| o.addr.to_string()).collect::<Vec<_>>();
    assert_eq!(addrs(direct_replicas(&all, &addr("p"))), ["r1:3306"]);
    assert_eq!(
        addrs(replication_tree(&all, &addr("p"))),
        ["r1:3306", "r2:3306"]
    );
}

#[test]
fn dead_primary_refused_and_all_replicas_connecting() {
    let lost = "Can't connect to MySQL server on 'p' (111)";
    check_evidence(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[
            down("p", Refused),
            replica("r1").of("p").io(Connecting).errno(2003, lost),
            replica("r2").of("p").io(Connecting).errno(2003, lost),
        ],
        r#"
        primary: p:3306
        Critical DeadPrimary p:3306: primary p:3306 is dead: unreachable, and all 2 replica(s) that could tell lost it
          p:3306: unreachable: refused: connection refused
          r1:3306: io_thread=Connecting sql_thread=Yes last_io_errno=2003 "Can't connect to MySQL server on 'p' (111)"
          r2:3306: io_thread=Connecting sql_thread=Yes last_io_errno=2003 "Can't connect to MySQL server on 'p' (111)"
        "#,
    );
}

#[test]
fn dead_primary_with_io_thread_given_up() {
    // After master_retry_count the IO thread stops with an error: still a witness of the loss.
    check(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[
            down("p", ProbeFailureKind::Other),
            replica("r1").of("p").io(No).errno(2003, "gave up"),
            replica("r2")
                .of("p")
                .io(Connecting)
                .errno(2013, "lost connection"),
        ],
        "
        primary: p:3306
        Critical DeadPrimary p:3306
        ",
    );
}

#[test]
fn timeout_primary_while_replicas_replicate_is_unreachable_not_dead() {
    check_evidence(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[
            down("p", Timeout),
            replica("r1").of("p"),
            replica("r2").of("p"),
        ],
        "
        primary: p:3306
        Error UnreachablePrimary p:3306: primary p:3306 is unreachable, but 2 replica(s) still receive from it
          p:3306: unreachable: timeout: connect timed out after 2s
          r1:3306: io_thread=Yes sql_thread=Yes: still receives from p:3306
          r2:3306: io_thread=Yes sql_thread=Yes: still receives from p:3306
        ",
    );
}

#[test]
fn one_replica_still_receiving_keeps_the_primary_unreachable_not_dead() {
    // r2's lost IO thread is the primary's story, not ReplicaNotReplicating; the missing
    // replica is still counted.
    check(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[
            down("p", Refused),
            replica("r1").of("p"),
            replica("r2").of("p").io(Connecting).errno(2003, "refused"),
        ],
        "
        primary: p:3306
        Error UnreachablePrimary p:3306
        Warning ReplicaMissing
        ",
    );
}

#[test]
fn dead_primary_but_no_replica_can_confirm_is_unreachable() {
    // r1 cannot be reached; r2's IO thread was stopped by hand (no error), so it says
    // nothing about the primary. No replica confirms the death.
    check_evidence(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[
            down("p", Refused),
            down("r1", Timeout),
            replica("r2").of("p").io(No),
        ],
        "
        primary: p:3306
        Error UnreachablePrimary p:3306: primary p:3306 is unreachable and no replica could confirm it is dead
          p:3306: unreachable: refused: connection refused
          r2:3306: io_thread=No sql_thread=Yes: IO thread stopped by hand, cannot confirm
          p:3306: no replica could confirm: 1 direct replica(s) had their IO thread stopped by hand
        Warning ReplicaMissing: primary p:3306 has 0 replicating replica(s), expected 2
          p:3306: 0 replicating replica(s) < expected_replicas=2
          r1:3306: unreachable: timeout: connect timed out after 2s
          r2:3306: source=p:3306 io_thread=No sql_thread=Yes
        Warning UnreachableReplica r1:3306: instance r1:3306 is unreachable
          r1:3306: unreachable: timeout: connect timed out after 2s
        ",
    );
}

#[test]
fn dead_primary_with_every_replica_unreachable_is_blind() {
    // Without a reachable replica nothing names the primary: the cluster is blind.
    check_evidence(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[down("p", Refused), down("r1", Timeout), down("r2", Auth)],
        "
        primary: none
        Critical NoPrimary: no instance could be reached: the cluster is blind
          p:3306: unreachable: refused: connection refused
          r1:3306: unreachable: timeout: connect timed out after 2s
          r2:3306: unreachable: auth: access denied for user 'dbfleet'
        ",
    );
}

#[test]
fn dead_primary_still_reports_stopped_sql_threads_but_not_replica_missing() {
    check_evidence(
        &spec(&["p", "r1", "r2", "r3"]).expect(3),
        &[
            down("p", Refused),
            replica("r1").of("p").io(Connecting),
            replica("r2")
                .of("p")
                .io(Connecting)
                .sql_error(1062, "Duplicate entry '42' for key 'PRIMARY'"),
            down("r3", Timeout),
        ],
        r#"
        primary: p:3306
        Critical DeadPrimary p:3306: primary p:3306 is dead: unreachable, and all 2 replica(s) that could tell lost it
          p:3306: unreachable: refused: connection refused
          r1:3306: io_thread=Connecting sql_thread=Yes
          r2:3306: io_thread=Connecting sql_thread=No last_sql_errno=1062 "Duplicate entry '42' for key 'PRIMARY'"
        Error ReplicaNotReplicating r2:3306: replica r2:3306 of p:3306: SQL thread is stopped
          r2:3306: source=p:3306 io_thread=Connecting sql_thread=No last_sql_errno=1062 "Duplicate entry '42' for key 'PRIMARY'"
        Warning UnreachableReplica r3:3306: instance r3:3306 is unreachable
          r3:3306: unreachable: timeout: connect timed out after 2s
        "#,
    );
}

#[test]
fn unprobed_primary_is_unreachable_not_dead() {
    // `p` is only known from the replicas' source: no failed probe, so no DeadPrimary yet.
    check_evidence(
        &spec(&["r1", "r2"]),
        &[
            replica("r1").of("p").io(Connecting),
            replica("r2").of("p").io(Connecting),
        ],
        "
        primary: p:3306
        Error UnreachablePrimary p:3306: primary p:3306 was not probed; its replicas name it as their source
          p:3306: not probed: known only as its replicas' source
          r1:3306: io_thread=Connecting sql_thread=Yes
          r2:3306: io_thread=Connecting sql_thread=Yes
        ",
    );
}

#[test]
fn two_writable_servers_without_source_are_multiple_primaries() {
    check_evidence(
        &spec(&["a", "b", "r1"]).expect(1),
        &[
            primary("a"),
            primary("b"),
            replica("r1").of("a"),
            down("r2", Timeout),
        ],
        "
        primary: none
        Critical MultiplePrimaries: 2 writable instances replicate from no one: a:3306, b:3306
          a:3306: no replication source, read_only=OFF; replicas: r1:3306
          b:3306: no replication source, read_only=OFF; no replicas
        Warning UnreachableReplica r2:3306: instance r2:3306 is unreachable
          r2:3306: unreachable: timeout: connect timed out after 2s
        ",
    );
    // Two bare writable servers, no replication at all.
    check(
        &spec(&["a", "b"]),
        &[primary("a"), primary("b")],
        "
        primary: none
        Critical MultiplePrimaries
        ",
    );
}

#[test]
fn ambiguous_roots_without_two_writable_are_no_primary() {
    // A dead primary whose replicas lost it, beside a writable isolated server: which one
    // serves is unknown, and only one of them is known to be writable.
    check_evidence(
        &spec(&["p", "x", "r1"]),
        &[
            down("p", Refused),
            primary("x"),
            replica("r1").of("p").io(Connecting),
        ],
        "
        primary: none
        Critical NoPrimary: no primary can be named among p:3306, x:3306
          p:3306: unreachable: refused: connection refused; replicas: r1:3306
          x:3306: no replication source, read_only=OFF; no replicas
        Error ReplicaNotReplicating r1:3306: replica r1:3306 of p:3306: IO thread is Connecting
          r1:3306: source=p:3306 io_thread=Connecting sql_thread=Yes
        ",
    );
}

#[test]
fn replication_cycle_has_no_primary() {
    check(
        &spec(&["a", "b"]),
        &[replica("a").of("b"), replica("b").of("a")],
        "
        primary: none
        Critical NoPrimary
        ",
    );
}

#[test]
fn primary_read_only() {
    check_evidence(
        &spec(&["p", "r1"]).expect(1),
        &[primary("p").read_only(), replica("r1").of("p")],
        "
        primary: p:3306
        Error PrimaryReadOnly p:3306: primary p:3306 is read-only
          p:3306: read_only=ON
        ",
    );
}

#[test]
fn lone_read_only_server_is_a_read_only_primary() {
    // Its replicas are unreachable; the only reachable server is the primary even though
    // it is read-only.
    check(
        &spec(&["p", "r1"]).expect(1),
        &[primary("p").read_only(), down("r1", Refused)],
        "
        primary: p:3306
        Error PrimaryReadOnly p:3306
        Warning ReplicaMissing
        Warning UnreachableReplica r1:3306
        ",
    );
}

#[test]
fn writable_replica() {
    check_evidence(
        &spec(&["p", "r1"]).expect(1),
        &[primary("p"), replica("r1").of("p").writable()],
        "
        primary: p:3306
        Error WritableReplica r1:3306: replica r1:3306 of p:3306 is writable
          r1:3306: read_only=OFF source=p:3306
        ",
    );
}

#[test]
fn sql_thread_stopped_with_error_text() {
    check_evidence(
        &spec(&["p", "r1"]),
        &[
            primary("p"),
            replica("r1")
                .of("p")
                .sql_error(1032, "Could not execute Delete_rows_v1 event on table db.t"),
        ],
        r#"
        primary: p:3306
        Error ReplicaNotReplicating r1:3306: replica r1:3306 of p:3306: SQL thread is stopped
          r1:3306: source=p:3306 io_thread=Yes sql_thread=No last_sql_errno=1032 "Could not execute Delete_rows_v1 event on table db.t"
        "#,
    );
}

#[test]
fn io_thread_down_on_replica_of_a_live_primary() {
    check_evidence(
        &spec(&["p", "r1", "r2"]),
        &[
            primary("p"),
            replica("r1")
                .of("p")
                .io(No)
                .errno(1236, "Got fatal error 1236 from master"),
            replica("r2")
                .of("p")
                .io(Connecting)
                .errno(1045, "Access denied")
                .sql_error(1146, "Table 'db.t' doesn't exist"),
        ],
        r#"
        primary: p:3306
        Error ReplicaNotReplicating r1:3306: replica r1:3306 of p:3306: IO thread is No
          r1:3306: source=p:3306 io_thread=No sql_thread=Yes last_io_errno=1236 "Got fatal error 1236 from master"
        Error ReplicaNotReplicating r2:3306: replica r2:3306 of p:3306: IO thread is Connecting and SQL thread stopped
          r2:3306: source=p:3306 io_thread=Connecting sql_thread=No last_io_errno=1045 "Access denied" last_sql_errno=1146 "Table 'db.t' doesn't exist"
        "#,
    );
}

#[test]
fn replica_lagging() {
    check_evidence(
        &spec(&["p", "r1", "r2", "r3"]).max_lag(10),
        &[
            primary("p"),
            replica("r1").of("p").lag(42),
            // At the limit: fine.
            replica("r2").of("p").lag(10),
            // A stopped thread makes the lag NULL: not lagging, not replicating.
            replica("r3").of("p").sql_error(1062, "dup"),
        ],
        r#"
        primary: p:3306
        Error ReplicaNotReplicating r3:3306: replica r3:3306 of p:3306: SQL thread is stopped
          r3:3306: source=p:3306 io_thread=Yes sql_thread=No last_sql_errno=1062 "dup"
        Warning ReplicaLagging r1:3306: replica r1:3306 is 42s behind p:3306
          r1:3306: seconds_behind_source=42 > max_lag=10s
        "#,
    );
}

#[test]
fn master_delay_lag_is_reported_with_the_delay() {
    check_evidence(
        &spec(&["p", "d"]).max_lag(60),
        &[primary("p"), replica("d").of("p").delay(3600).lag(3605)],
        "
        primary: p:3306
        Warning ReplicaLagging d:3306: replica d:3306 is 3605s behind p:3306
          d:3306: seconds_behind_source=3605 > max_lag=60s (sql_delay=3600s)
        ",
    );
}

#[test]
fn errant_gtid_mariadb_but_not_the_timing_race_on_the_primary_server_id() {
    check_evidence(
        &spec(&["p", "r1", "r2", "r3"]),
        &[
            primary("p").id(1).gtid("0-1-100,0-2-5"),
            // Applied 0-1-101 after the primary was observed: a race, not errant.
            replica("r1").of("p").id(2).gtid("0-1-101,0-2-5"),
            // A local write with its own server_id 3.
            replica("r2").of("p").id(3).gtid("0-1-100,0-2-5,0-3-7"),
            // Ahead on server_id 2, which is not the primary's: errant.
            replica("r3").of("r1").id(4).gtid("0-1-100,0-2-9"),
        ],
        "
        primary: p:3306
        Error ErrantGtid r2:3306: r2:3306 has transactions primary p:3306 never had
          r2:3306: errant_gtids=0-3-7 (primary has no 0-3-*)
          p:3306: gtid_binlog_state=0-1-100,0-2-5
        Error ErrantGtid r3:3306: r3:3306 has transactions primary p:3306 never had
          r3:3306: errant_gtids=0-2-9 (primary at 0-2-5)
          p:3306: gtid_binlog_state=0-1-100,0-2-5
        ",
    );
}

#[test]
fn errant_gtid_is_not_checked_against_an_unreachable_primary() {
    check(
        &spec(&["p", "r1"]),
        &[
            down("p", Timeout),
            replica("r1").of("p").id(2).gtid("0-1-100,0-2-7"),
        ],
        "
        primary: p:3306
        Error UnreachablePrimary p:3306
        ",
    );
}

#[test]
fn errant_gtid_mysql() {
    let p = format!("{UUID_A}:1-100");
    check_evidence(
        &spec(&["p", "r1", "r2"]),
        &[
            primary("p").mysql(&p),
            replica("r1")
                .of("p")
                .mysql(&format!("{UUID_A}:1-100,{UUID_B}:1-3")),
            // Ahead of the primary's observation, but it received 101-105 from the primary.
            replica("r2")
                .of("p")
                .mysql(&format!("{UUID_A}:1-105"))
                .received(&format!("{UUID_A}:90-105")),
        ],
        &format!(
            "
            primary: p:3306
            Error ErrantGtid r1:3306: r1:3306 has transactions primary p:3306 never had
              r1:3306: errant_gtids={UUID_B}:1-3
              p:3306: gtid_executed={UUID_A}:1-100
            "
        ),
    );
}

/// A primary promoted a moment ago, last observed before its first own write: a replica
/// that already applied that write is not errant. A write under any other server_id is.
#[test]
fn the_primarys_first_own_writes_are_not_errant_on_its_replicas() {
    let promoted = primary("p").id(2).gtid("0-1-6").0;
    let replica_ok = replica("r").of("p").gtid("0-1-6,0-2-9").0;
    let none = errant_transactions(&replica_ok, &promoted).unwrap();
    assert!(none.is_empty(), "{none}");
    let replica_bad = replica("r").of("p").gtid("0-1-6,0-2-9,0-3-7").0;
    let errant = errant_transactions(&replica_bad, &promoted).unwrap();
    assert_eq!(errant.to_string(), "0-3-7 (primary has no 0-3-*)");
}

#[test]
fn errant_transactions_need_comparable_states() {
    let mariadb = primary("p").gtid("0-1-5").0;
    let mysql = replica("r").of("p").mysql(&format!("{UUID_A}:1-5")).0;
    let dead = down("p", Refused).0;
    assert_eq!(errant_transactions(&mysql, &mariadb), None);
    assert_eq!(errant_transactions(&mysql, &dead), None);
    let same = errant_transactions(&mariadb, &mariadb).unwrap();
    assert!(same.is_empty());
    assert_eq!(same.to_string(), "");
}

#[test]
fn replica_missing_lists_what_is_down() {
    check_evidence(
        &spec(&["p", "r1", "r2", "r3", "r4"]).expect(4),
        &[
            primary("p"),
            replica("r1").of("p"),
            replica("r2").of("p").io(No),
            down("r3", Refused),
        ],
        "
        primary: p:3306
        Error ReplicaNotReplicating r2:3306: replica r2:3306 of p:3306: IO thread is No
          r2:3306: source=p:3306 io_thread=No sql_thread=Yes
        Warning ReplicaMissing: primary p:3306 has 1 replicating replica(s), expected 4
          p:3306: 1 replicating replica(s) < expected_replicas=4
          r2:3306: source=p:3306 io_thread=No sql_thread=Yes
          r3:3306: unreachable: refused: connection refused
          r4:3306: not observed
        Warning UnreachableReplica r3:3306: instance r3:3306 is unreachable
          r3:3306: unreachable: refused: connection refused
        ",
    );
}

#[test]
fn semi_sync_degraded() {
    check_evidence(
        &spec(&["p", "r1"]).semi_sync(),
        &[
            primary("p").semi_sync(true, false, 0),
            replica("r1").of("p"),
        ],
        "
        primary: p:3306
        Error SemiSyncDegraded p:3306: semi-sync is wanted but degraded on primary p:3306
          p:3306: semi_sync source_active=OFF
          p:3306: semi_sync source_clients=0
        ",
    );
    check(
        &spec(&["p", "r1"]).semi_sync(),
        &[primary("p"), replica("r1").of("p")],
        "
        primary: p:3306
        Error SemiSyncDegraded p:3306
        ",
    );
    check(
        &spec(&["p", "r1"]).semi_sync(),
        &[primary("p").semi_sync(true, true, 1), replica("r1").of("p")],
        "primary: p:3306",
    );
    // Not wanted: not checked.
    check(
        &spec(&["p", "r1"]),
        &[primary("p"), replica("r1").of("p")],
        "primary: p:3306",
    );
}

#[test]
fn unknown_instance_directly_or_in_a_chain() {
    check_evidence(
        &spec(&["p", "r1"]).expect(3),
        &[
            primary("p"),
            replica("r1").of("p"),
            replica("x1").of("p"),
            replica("x2").of("r1"),
        ],
        "
        primary: p:3306
        Warning UnknownInstance x1:3306: x1:3306 replicates from primary p:3306 but is not in the spec
          x1:3306: source=p:3306 (primary p:3306); not in the cluster spec
        Warning UnknownInstance x2:3306: x2:3306 replicates from primary p:3306 but is not in the spec
          x2:3306: source=r1:3306 (primary p:3306); not in the cluster spec
        ",
    );
}

#[test]
fn unreachable_replica() {
    check_evidence(
        &spec(&["p", "r1", "r2"]).expect(1),
        &[primary("p"), replica("r1").of("p"), down("r2", Refused)],
        "
        primary: p:3306
        Warning UnreachableReplica r2:3306: instance r2:3306 is unreachable
          r2:3306: unreachable: refused: connection refused
        ",
    );
}

#[test]
fn primary_with_every_replica_unreachable_is_still_the_primary() {
    check(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[primary("p"), down("r1", Refused), down("r2", Timeout)],
        "
        primary: p:3306
        Warning ReplicaMissing
        Warning UnreachableReplica r1:3306
        Warning UnreachableReplica r2:3306
        ",
    );
}

#[test]
fn replica_left_behind_by_a_failover() {
    // n was promoted; `old` is dead and r1 still points at it.
    check_evidence(
        &spec(&["old", "n", "r1", "r2"]).expect(2),
        &[
            down("old", Refused),
            primary("n"),
            replica("r1")
                .of("old")
                .io(Connecting)
                .errno(2003, "refused"),
            replica("r2").of("n"),
        ],
        r#"
        primary: n:3306
        Error ReplicaNotReplicating r1:3306: replica r1:3306 of old:3306: IO thread is Connecting
          r1:3306: source=old:3306 io_thread=Connecting sql_thread=Yes last_io_errno=2003 "refused"
        Warning ReplicaMissing: primary n:3306 has 1 replicating replica(s), expected 2
          n:3306: 1 replicating replica(s) < expected_replicas=2
          old:3306: unreachable: refused: connection refused
          r1:3306: outside the primary's tree: source=old:3306 io_thread=Connecting sql_thread=Yes last_io_errno=2003 "refused"
        Warning UnreachableReplica old:3306: instance old:3306 is unreachable
          old:3306: unreachable: refused: connection refused
        "#,
    );
}

#[test]
fn unreachable_intermediate_does_not_hide_the_primary() {
    check(
        &spec(&["p", "i", "r1", "r2"]).expect(1),
        &[
            primary("p"),
            replica("r1").of("p"),
            down("i", Timeout),
            replica("r2").of("i"),
        ],
        "
        primary: p:3306
        Warning UnreachableReplica i:3306
        ",
    );
}

#[test]
fn find_primary_cases() {
    let cases: Vec<(&str, Vec<Obs>, PrimaryGuess)> = vec![
        (
            "healthy",
            vec![primary("p"), replica("r").of("p")],
            PrimaryGuess::Reachable(addr("p")),
        ),
        (
            "dead",
            vec![down("p", Refused), replica("r").of("p").io(Connecting)],
            PrimaryGuess::Unreachable(addr("p")),
        ),
        (
            "unobserved source",
            vec![replica("r").of("p")],
            PrimaryGuess::Unreachable(addr("p")),
        ),
        (
            "lone writable",
            vec![primary("p"), down("r", Refused)],
            PrimaryGuess::Reachable(addr("p")),
        ),
        (
            "lone read-only",
            vec![server("p")],
            PrimaryGuess::Reachable(addr("p")),
        ),
        (
            "several read-only, no replication",
            vec![server("a"), server("b")],
            PrimaryGuess::None,
        ),
        (
            "blind",
            vec![down("a", Refused), down("b", Timeout)],
            PrimaryGuess::None,
        ),
        ("nothing", vec![], PrimaryGuess::None),
        (
            "cycle",
            vec![replica("a").of("b"), replica("b").of("a")],
            PrimaryGuess::None,
        ),
        (
            "two writable",
            vec![primary("b"), primary("a")],
            PrimaryGuess::Ambiguous(vec![addr("a"), addr("b")]),
        ),
        (
            "two trees",
            vec![
                server("a"),
                replica("ra").of("a"),
                server("b"),
                replica("rb").of("b"),
            ],
            PrimaryGuess::Ambiguous(vec![addr("a"), addr("b")]),
        ),
        (
            "two dead sources",
            vec![replica("ra").of("a"), replica("rb").of("b")],
            PrimaryGuess::Ambiguous(vec![addr("a"), addr("b")]),
        ),
        (
            "isolated read-only beside a tree is a spare",
            vec![primary("p"), replica("r").of("p"), server("spare")],
            PrimaryGuess::Reachable(addr("p")),
        ),
        (
            "isolated writable beside a tree is a candidate",
            vec![
                server("p"),
                replica("r").of("p"),
                primary("back"),
                down("x", Timeout),
            ],
            PrimaryGuess::Ambiguous(vec![addr("back"), addr("p")]),
        ),
    ];
    for (name, obs, expected) in cases {
        assert_eq!(find_primary(&observations(&obs)), expected, "{name}");
    }
}

#[test]
fn latest_observation_of_an_instance_wins() {
    let obs = [
        primary("p").at(2_000),
        down("p", Refused).at(1_000),
        replica("r1").of("p"),
    ];
    check(&spec(&["p", "r1"]).expect(1), &obs, "primary: p:3306");
    let obs = [
        primary("p").at(1_000),
        down("p", Refused).at(2_000),
        replica("r1").of("p").io(Connecting),
    ];
    check(
        &spec(&["p", "r1"]).expect(1),
        &obs,
        "
        primary: p:3306
        Critical DeadPrimary p:3306
        ",
    );
}

#[test]
fn problems_carry_cluster_severity_and_a_stable_order() {
    let analysis = run(
        &spec(&["p", "r1", "r2"]).expect(3).semi_sync(),
        &[
            primary("p").read_only(),
            replica("r1").of("p").writable().lag(99),
            down("r2", Refused),
        ],
    );
    assert_text(
        &render(&analysis, false),
        "
        primary: p:3306
        Error PrimaryReadOnly p:3306
        Error WritableReplica r1:3306
        Error SemiSyncDegraded p:3306
        Warning ReplicaLagging r1:3306
        Warning ReplicaMissing
        Warning UnreachableReplica r2:3306
        ",
    );
    for p in &analysis.problems {
        assert_eq!(p.cluster, "c1");
        assert_eq!(p.severity, severity(p.kind));
        assert!(!p.evidence.is_empty(), "{}", p.key());
    }
    assert_eq!(severity(ProblemKind::DeadPrimary), Severity::Critical);
    assert_eq!(severity(ProblemKind::UnreachableSeed), Severity::Warning);
}

#[test]
fn shape_key_ignores_what_moves_every_probe_and_sees_what_matters() {
    let base = replica("r1").of("p").gtid("0-1-10").lag(0);
    let key = base.0.shape_key();
    // Positions, timestamps, a lag of a second or two, an error's text: same shape.
    assert_eq!(base.clone().gtid("0-1-99").0.shape_key(), key);
    assert_eq!(base.clone().at(9_999).0.shape_key(), key);
    assert_eq!(
        base.clone().lag(1).0.shape_key(),
        base.clone().lag(3).0.shape_key()
    );
    // A change of role, source, thread, lag class, or reachability: another shape.
    for changed in [
        base.clone().writable(),
        base.clone().of("q"),
        base.clone().io(No),
        base.clone().sql_error(1062, "duplicate"),
        base.clone().lag(60),
        base.clone().id(7),
        down("r1", Refused),
    ] {
        assert_ne!(changed.0.shape_key(), key, "{:?}", changed.0);
    }
    assert_ne!(
        down("r1", Refused).0.shape_key(),
        down("r1", Timeout).0.shape_key()
    );
    assert_ne!(replica("r2").0.shape_key(), replica("r1").0.shape_key());
}

#[test]
fn semi_sync_that_can_fall_back_to_async() {
    let lossless = model::SEMI_SYNC_LOSSLESS_TIMEOUT_MS;
    check_evidence(
        &spec(&["p", "r1"]).semi_sync(),
        &[
            primary("p").semi_sync(true, true, 1).fallback(5000, false),
            replica("r1").of("p"),
        ],
        "
        primary: p:3306
        Error SemiSyncCanFallBack p:3306: primary p:3306 can fall back to async and acknowledge writes no replica has: SET GLOBAL rpl_semi_sync_master_timeout=4294967295, rpl_semi_sync_master_wait_no_slave=ON (and in its config file)
          p:3306: rpl_semi_sync_master_timeout=5000: a commit with no ack for 5.0 s is committed alone
          p:3306: rpl_semi_sync_master_wait_no_slave=OFF: with no semi-sync replica connected, commits do not wait
        ",
    );
    // Either setting alone is enough to fall back.
    for (timeout, wait) in [(60_000, true), (lossless, false)] {
        check(
            &spec(&["p", "r1"]).semi_sync(),
            &[
                primary("p")
                    .semi_sync(true, true, 1)
                    .fallback(timeout, wait),
                replica("r1").of("p"),
            ],
            "
            primary: p:3306
            Error SemiSyncCanFallBack p:3306
            ",
        );
    }
    // Lossless: a year or more, and waiting with no replica.
    for timeout in [lossless, model::SEMI_SYNC_NEVER_FALLS_BACK_MS, u64::MAX] {
        check(
            &spec(&["p", "r1"]).semi_sync(),
            &[
                primary("p")
                    .semi_sync(true, true, 1)
                    .fallback(timeout, true),
                replica("r1").of("p"),
            ],
            "primary: p:3306",
        );
    }
    // Not wanted, or not enabled (SemiSyncDegraded says that): not judged.
    check(
        &spec(&["p", "r1"]),
        &[
            primary("p").semi_sync(true, true, 1).fallback(5000, false),
            replica("r1").of("p"),
        ],
        "primary: p:3306",
    );
    check(
        &spec(&["p", "r1"]).semi_sync(),
        &[
            primary("p")
                .semi_sync(false, false, 0)
                .fallback(5000, false),
            replica("r1").of("p"),
        ],
        "
        primary: p:3306
        Error SemiSyncDegraded p:3306
        ",
    );
}

#[test]
fn locked_semi_sync_primary() {
    let lossless = model::SEMI_SYNC_LOSSLESS_TIMEOUT_MS;
    check_evidence(
        &spec(&["p", "r1"]).semi_sync(),
        &[
            primary("p")
                .semi_sync(true, true, 0)
                .fallback(lossless, true)
                .waiting(4),
            replica("r1").of("p").io(No),
        ],
        "
        primary: p:3306
        Critical LockedSemiSyncPrimary p:3306: primary p:3306 has 4 commit(s) waiting for a semi-sync ack no replica can send: bring back a replica with rpl_semi_sync_slave_enabled=ON (START SLAVE), or, accepting writes with no second copy, SET GLOBAL rpl_semi_sync_master_enabled=OFF
          p:3306: Rpl_semi_sync_master_wait_sessions=4 Rpl_semi_sync_master_clients=0 Rpl_semi_sync_master_status=ON
        Error ReplicaNotReplicating r1:3306: replica r1:3306 of p:3306: IO thread is No
          r1:3306: source=p:3306 io_thread=No sql_thread=Yes
        Error SemiSyncDegraded p:3306: semi-sync is wanted but degraded on primary p:3306
          p:3306: semi_sync source_clients=0
        ",
    );
    // Sessions waiting on a connected semi-sync replica are normal commits in flight.
    check(
        &spec(&["p", "r1"]).semi_sync(),
        &[
            primary("p")
                .semi_sync(true, true, 1)
                .fallback(lossless, true)
                .waiting(4),
            replica("r1").of("p"),
        ],
        "primary: p:3306",
    );
    // No client but nothing waits (no write yet): degraded, not locked.
    check(
        &spec(&["p", "r1"]).semi_sync(),
        &[
            primary("p")
                .semi_sync(true, true, 0)
                .fallback(lossless, true),
            replica("r1").of("p").io(No),
        ],
        "
        primary: p:3306
        Error ReplicaNotReplicating r1:3306
        Error SemiSyncDegraded p:3306
        ",
    );
}

#[test]
fn frozen_primary_is_dead_once_every_replica_stream_is_silent_long_enough() {
    // Default stall_confirm 1.5 s, heartbeat period 500 ms: silent for 2.0 s or more.
    check_evidence(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[
            down("p", Timeout),
            replica("r1")
                .of("p")
                .received("0-1-5531")
                .stream(812, 500, Some(2_400)),
            replica("r2")
                .of("p")
                .received("0-1-5531")
                .stream(790, 500, Some(2_000)),
        ],
        "
        primary: p:3306
        Critical DeadPrimary p:3306: primary p:3306 is dead: unreachable, and all 2 replica(s) that could tell lost it (2 by a silent stream)
          p:3306: unreachable: timeout: connect timed out after 2s
          r1:3306: io_thread=Yes sql_thread=Yes but nothing received for 2.4 s (stall_confirm 1.5 s + heartbeat period 500 ms; heartbeats 812 unchanged, Gtid_IO_Pos 0-1-5531 unchanged, Read_Master_Log_Pos binlog.000001:4000 unchanged)
          r2:3306: io_thread=Yes sql_thread=Yes but nothing received for 2.0 s (stall_confirm 1.5 s + heartbeat period 500 ms; heartbeats 790 unchanged, Gtid_IO_Pos 0-1-5531 unchanged, Read_Master_Log_Pos binlog.000001:4000 unchanged)
        ",
    );
    // A stalled replica and a lost one together confirm too.
    check(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[
            down("p", Timeout),
            replica("r1").of("p").stream(812, 500, Some(2_400)),
            replica("r2").of("p").io(Connecting).errno(2013, "lost"),
        ],
        "
        primary: p:3306
        Critical DeadPrimary p:3306
        ",
    );
}

#[test]
fn a_short_silence_or_an_unknown_one_never_confirms_a_death() {
    // Just under stall_confirm + one heartbeat period on one replica: still receiving.
    check_evidence(
        &spec(&["p", "r1", "r2"]).expect(2),
        &[
            down("p", Timeout),
            replica("r1").of("p").stream(812, 500, Some(2_400)),
            replica("r2").of("p").stream(790, 500, Some(1_999)),
        ],
        "
        primary: p:3306
        Error UnreachablePrimary p:3306: primary p:3306 is unreachable, but 1 replica(s) still receive from it
          p:3306: unreachable: timeout: connect timed out after 2s
          r1:3306: io_thread=Yes sql_thread=Yes but nothing received for 2.4 s (stall_confirm 1.5 s + heartbeat period 500 ms; heartbeats 812 unchanged, Read_Master_Log_Pos binlog.000001:4000 unchanged)
          r2:3306: io_thread=Yes sql_thread=Yes: still receives from p:3306 (nothing received for 2.0 s, heartbeat period 500 ms)
        ",
    );
    let unconfirmed = "
        primary: p:3306
        Error UnreachablePrimary p:3306
        ";
    // The margin is one heartbeat period: with a 1 s period, 2.4 s is not enough.
    check(
        &spec(&["p", "r1"]).expect(1),
        &[
            down("p", Timeout),
            replica("r1").of("p").stream(812, 1_000, Some(2_400)),
        ],
        unconfirmed,
    );
    // A higher threshold in the spec moves the line.
    check(
        &spec(&["p", "r1"]).expect(1).stall_confirm(3_000),
        &[
            down("p", Timeout),
            replica("r1").of("p").stream(812, 500, Some(3_400)),
        ],
        unconfirmed,
    );
    check(
        &spec(&["p", "r1"]).expect(1).stall_confirm(3_000),
        &[
            down("p", Timeout),
            replica("r1").of("p").stream(812, 500, Some(3_500)),
        ],
        "
        primary: p:3306
        Critical DeadPrimary p:3306
        ",
    );
    for r in [
        // No history yet.
        replica("r1").of("p").stream(812, 500, None),
        // Heartbeats off: an idle source sends nothing, silence proves nothing.
        replica("r1").of("p").stream(812, 0, Some(60_000)),
        // No heartbeat counter (MySQL): never tracked.
        replica("r1").of("p"),
    ] {
        check(
            &spec(&["p", "r1"]).expect(1),
            &[down("p", Timeout), r],
            unconfirmed,
        );
    }
    // stall_confirm = 0 turns the rule off.
    check(
        &spec(&["p", "r1"]).expect(1).stall_confirm(0),
        &[
            down("p", Timeout),
            replica("r1").of("p").stream(812, 500, Some(60_000)),
        ],
        unconfirmed,
    );
    // A reachable primary is never judged by its replicas' streams: the replica that
    // receives nothing from a source that answers is the one stalled.
    check(
        &spec(&["p", "r1"]).expect(1),
        &[
            primary("p"),
            replica("r1").of("p").stream(812, 500, Some(60_000)),
        ],
        "
        primary: p:3306
        Error ReplicaWritesStalled r1:3306
        ",
    );
}

#[test]
fn stream_tracker_measures_how_long_nothing_moved() {
    use model::StreamTracker;
    let mut t = StreamTracker::default();
    let at = |o: Obs, ms: u64| o.at(ms).0;
    let stalled = |o: &Observation| {
        o.state()
            .and_then(|s| s.replication.as_ref())
            .and_then(|r| r.stream.stalled_ms)
    };
    let r = |beats: u64, gtid: &str| {
        replica("r1")
            .of("p")
            .received(gtid)
            .stream(beats, 500, None)
    };
    let mut o = at(r(10, "0-1-5"), 1_000);
    t.note(&mut o);
    assert_eq!(
        stalled(&o),
        Some(0),
        "first sight: silent for at least 0 ms"
    );
    let mut o = at(r(10, "0-1-5"), 1_700);
    t.note(&mut o);
    assert_eq!(stalled(&o), Some(700));
    // A heartbeat arrived: moving again.
    let mut o = at(r(11, "0-1-5"), 2_000);
    t.note(&mut o);
    assert_eq!(stalled(&o), Some(0));
    // An event arrived (received position moved), heartbeats unchanged.
    let mut o = at(r(11, "0-1-6"), 2_600);
    t.note(&mut o);
    assert_eq!(stalled(&o), Some(0));
    // An unreachable observation in between keeps the mark.
    let mut gone = down("r1", Timeout).at(3_000).0;
    t.note(&mut gone);
    let mut o = at(r(11, "0-1-6"), 4_100);
    t.note(&mut o);
    assert_eq!(stalled(&o), Some(1_500));
    // An older observation arriving late, with the same counters (a probe that started
    // before the latest one and finished after it): it gets the latest figure, and changes
    // nothing.
    let mut late = at(r(11, "0-1-6"), 3_900);
    t.note(&mut late);
    assert_eq!(stalled(&late), Some(1_500));
    // With other counters it is stale: unknown, and it changes nothing either.
    let mut late = at(r(11, "0-1-5"), 3_950);
    t.note(&mut late);
    assert_eq!(stalled(&late), None);
    let mut o = at(r(11, "0-1-6"), 4_600);
    t.note(&mut o);
    assert_eq!(stalled(&o), Some(2_000));
    // IO thread not Yes: unknown, and the history is dropped.
    let mut o = at(r(11, "0-1-6").io(Connecting), 4_700);
    t.note(&mut o);
    assert_eq!(stalled(&o), None);
    let mut o = at(r(11, "0-1-6"), 4_800);
    t.note(&mut o);
    assert_eq!(stalled(&o), Some(0));
    // No heartbeat period: never tracked.
    let mut o = at(replica("r2").of("p").stream(5, 0, None), 5_000);
    t.note(&mut o);
    let mut o = at(replica("r2").of("p").stream(5, 0, None), 9_000);
    t.note(&mut o);
    assert_eq!(stalled(&o), None);
}

#[test]
fn primary_whose_writes_hang_is_stalled_not_unreachable() {
    let s = spec(&["p", "r1", "r2"]);
    let obs = [
        primary("p").write(Some(1_200), Some(1_900), 1, Some(0)),
        replica("r1").of("p").stream(40, 500, Some(0)),
        replica("r2").of("p").stream(41, 500, Some(100)),
    ];
    check_evidence(
        &s,
        &obs,
        "
        primary: p:3306
        Critical PrimaryWritesStalled p:3306: primary p:3306 answers reads but its writes have not completed for 1.9 s: a frozen or failing disk, or a global read lock (FLUSH TABLES WITH READ LOCK); see on_write_stall for what dbfleet does
          p:3306: heartbeat write pending for 1.2 s (deadline 500 ms), last completed 1.9 s ago, 1 attempt(s) failed, last: timed out
          r1:3306: io_thread=Yes sql_thread=Yes, still connected and receiving
          r2:3306: io_thread=Yes sql_thread=Yes, stream unchanged for 100 ms
        ",
    );
}

#[test]
fn a_write_within_its_deadline_or_one_that_completed_is_no_stall() {
    let s = spec(&["p", "r"]);
    for p in [
        primary("p").write(Some(300), Some(1_000), 0, None),
        primary("p").write(None, Some(200), 0, None),
    ] {
        check(
            &s,
            &[p, replica("r").of("p")],
            "
            primary: p:3306
            ",
        );
    }
}

#[test]
fn writes_waiting_for_semi_sync_acks_are_not_the_primarys_stall() {
    let s = spec(&["p", "r"]);
    check(
        &s,
        &[
            primary("p")
                .write(Some(2_000), Some(2_500), 1, Some(0))
                .waiting(3),
            replica("r").of("p"),
        ],
        "
        primary: p:3306
        ",
    );
}

#[test]
fn primary_whose_reads_time_out_on_an_open_connection_while_replicas_receive_is_stalled() {
    let s = spec(&["p", "r1"]);
    let mut p = down("p", Timeout).write(Some(1_500), Some(2_000), 1, Some(0));
    // (`observe` is the probe's batch: the connect and the greeting went through.)
    if let Reachability::Unreachable(f) = &mut p.0.reachability {
        f.message = "observe timed out after 500ms".into();
    }
    check(
        &s,
        &[p.clone(), replica("r1").of("p").stream(40, 500, Some(0))],
        "
        primary: p:3306
        Critical PrimaryWritesStalled p:3306
        ",
    );
    // A connect that times out (a frozen process) stays UnreachablePrimary.
    check(
        &s,
        &[
            down("p", Timeout).write(Some(1_500), Some(2_000), 1, Some(0)),
            replica("r1").of("p").stream(40, 500, Some(0)),
        ],
        "
        primary: p:3306
        Error UnreachablePrimary p:3306
        ",
    );
}

#[test]
fn full_disk_names_primary_disk_full_by_error_or_by_free_space() {
    let s = spec(&["p", "r"]);
    check_evidence(
        &s,
        &[
            primary("p").write(None, Some(3_000), 2, Some(1021)),
            replica("r").of("p"),
        ],
        r#"
        primary: p:3306
        Critical PrimaryDiskFull p:3306: primary p:3306 cannot write: its disk is full; writes have not completed for 3.0 s. Free space on it or grow it; dbfleet fails over only to a replica whose own disk can take writes
          p:3306: heartbeat write deadline 500 ms, last completed 3.0 s ago, 2 attempt(s) failed, last: error 1021 "Disk full (./dbfleet/heartbeat.ibd); waiting for someone to free some space..."
          r:3306: io_thread=Yes sql_thread=Yes, still connected and receiving
        "#,
    );
    // A write that hangs on a filesystem with no space left: full, and no DiskSpaceLow
    // beside it.
    check(
        &s,
        &[
            primary("p")
                .write(Some(1_000), Some(1_500), 1, Some(0))
                .disk(0, 300),
            replica("r").of("p").disk(200, 300),
        ],
        "
        primary: p:3306
        Critical PrimaryDiskFull p:3306
        ",
    );
}

#[test]
fn disk_space_low_warns_then_errs_on_every_member() {
    let s = spec(&["p", "r1", "r2"]);
    check_evidence(
        &s,
        &[
            primary("p").disk(20, 300),
            replica("r1").of("p").disk(10, 300),
            replica("r2").of("p").disk(100, 300),
        ],
        "
        primary: p:3306
        Error DiskSpaceLow r1:3306: r1:3306 has 10.0 MiB free on /d (/dev/loop0), under 5.0 %: free space or grow it before writes stop
          r1:3306: datadir /d/data/ on /d (/dev/loop0): 10.0 MiB of 300.0 MiB available (3.3 %)
        Warning DiskSpaceLow p:3306: p:3306 has 20.0 MiB free on /d (/dev/loop0), under 10.0 %: free space or grow it before writes stop
          p:3306: datadir /d/data/ on /d (/dev/loop0): 20.0 MiB of 300.0 MiB available (6.7 %)
        ",
    );
}

#[test]
fn replica_that_receives_nothing_from_a_live_source_or_applies_nothing_is_stalled() {
    let s = spec(&["p", "r1", "r2", "r3"]);
    check_evidence(
        &s,
        &[
            primary("p"),
            replica("r1").of("p").stream(40, 500, Some(2_500)),
            replica("r2")
                .of("p")
                .stream(40, 500, Some(0))
                .applying("0-1-120", "0-1-100", Some(12_000)),
            // Behind, but moving: no stall.
            replica("r3")
                .of("p")
                .stream(40, 500, Some(0))
                .applying("0-1-120", "0-1-110", Some(3_000)),
        ],
        "
        primary: p:3306
        Error ReplicaWritesStalled r1:3306: replica r1:3306 of p:3306 does not keep up: its disk may be stalled or full; failover never promotes it while this lasts
          r1:3306: io_thread=Yes but nothing received for 2.5 s while its source p:3306 answers (heartbeat period 500 ms): its relay log writes do not complete
        Error ReplicaWritesStalled r2:3306: replica r2:3306 of p:3306 does not keep up: its disk may be stalled or full; failover never promotes it while this lasts
          r2:3306: sql_thread=Yes but gtid_slave_pos 0-1-100 has not moved for 12.0 s while it received up to 0-1-120
        ",
    );
}

#[test]
fn stream_tracker_measures_how_long_the_applier_has_not_moved() {
    let mut t = model::StreamTracker::default();
    let mut note = |at: u64, applied: &str| {
        let mut o = replica("r")
            .of("p")
            .stream(40, 500, None)
            .applying("0-1-120", applied, None)
            .at(at)
            .0;
        t.note(&mut o);
        o.state()
            .and_then(|s| s.replication.as_ref())
            .and_then(|r| r.stream.apply_stalled_ms)
    };
    assert_eq!(note(1_000, "0-1-100"), Some(0));
    assert_eq!(note(3_000, "0-1-100"), Some(2_000));
    assert_eq!(note(4_000, "0-1-105"), Some(0));
    assert_eq!(note(5_000, "0-1-120"), None);
}

#[test]
fn replica_whose_probe_hangs_on_an_open_connection_is_stalled_not_unreachable() {
    let s = spec(&["p", "r1", "r2"]);
    let mut hung = down("r1", Timeout);
    if let Reachability::Unreachable(f) = &mut hung.0.reachability {
        f.message = "observe timed out after 500ms".into();
    }
    check(
        &s,
        &[
            primary("p"),
            hung,
            down("r2", Timeout),
            replica("r3").of("p"),
        ],
        "
        primary: p:3306
        Error ReplicaWritesStalled r1:3306
        Warning UnknownInstance r3:3306
        Warning UnreachableReplica r2:3306
        ",
    );
}
