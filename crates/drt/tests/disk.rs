//! Disk faults against real sandboxes whose datadirs are on loop filesystems: a stall blocks
//! the primary's writes until healed, a fill stops them, a dropped guard and SIGTERM both
//! thaw, and the runner moves a member onto a loop filesystem, injects and heals on time,
//! and loses nothing. Needs root and loop devices (`sandbox::testing::disk_faults_available`).
//! Ports 25520-25549.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drt::faults::{self, member_loopfs, DiskFault, DiskSpec};
use drt::report::{EventKind, Report};
use drt::runner::{run_once, RunTarget};
use drt::scenario::Scenario;
use probe::{ProbeError, ProbeOptions, Session};
use sandbox::loopfs::{self, LoopFs};
use sandbox::testing::{disk_faults_available, SandboxGuard, TestSandbox};
use sandbox::{Sandbox, Tuning, UpOptions};
use tokio_util::sync::CancellationToken;

fn opts(query: Duration) -> ProbeOptions {
    ProbeOptions {
        connect_timeout: Duration::from_secs(5),
        query_timeout: query,
    }
}

/// A write on `member` in a task of its own, with a long timeout.
fn spawn_write(
    sb: &TestSandbox,
    member: &str,
    id: u32,
) -> tokio::task::JoinHandle<Result<(), ProbeError>> {
    let addr = sb.addr(member);
    let admin = sb.admin();
    tokio::spawn(async move {
        let mut s = Session::connect(&addr, &admin, opts(Duration::from_secs(60))).await?;
        let r = s
            .exec("write", &format!("INSERT INTO app.d VALUES ({id}, 'x')"))
            .await;
        s.close().await;
        r
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fault_stall_and_fill_stop_the_primarys_writes_until_healed() {
    if !disk_faults_available("disk_fault_stall_and_fill_stop_the_primarys_writes_until_healed") {
        return;
    }
    let tuning = Tuning {
        loop_datadir_mb: 128,
        ..Tuning::default()
    };
    let sb = TestSandbox::up_tuned("drtdisk", 1, 25520, true, tuning).await;
    let mut s = Session::connect(&sb.addr("m1"), &sb.admin(), opts(Duration::from_secs(10)))
        .await
        .unwrap();
    s.exec(
        "create",
        "CREATE TABLE app.d (id INT PRIMARY KEY, pad VARCHAR(2000))",
    )
    .await
    .unwrap();
    s.close().await;

    // Stall: a write blocks; the heal releases it.
    let fs = Arc::new(member_loopfs(&sb, "m1").expect("m1 on a loop filesystem"));
    let stall = DiskFault::inject(fs.clone(), DiskSpec::Stall).expect("stall");
    assert!(fs.is_frozen());
    assert!(!stall.is_healed());
    let w = spawn_write(&sb, "m1", 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!w.is_finished(), "a write completed on a stalled disk");
    stall.heal().await.expect("heal");
    assert!(!fs.is_frozen());
    let ev = stall.event();
    assert_eq!(ev.note.as_deref(), Some("thawed"));
    assert!(ev.healed_ms.unwrap() >= ev.injected_ms + 3000, "{ev:?}");
    tokio::time::timeout(Duration::from_secs(30), w)
        .await
        .expect("the write completes after the thaw")
        .unwrap()
        .expect("and succeeds");

    // A stall whose guard is dropped (an early return, a panic) is thawed by the drop.
    let stall = DiskFault::inject(fs.clone(), DiskSpec::Stall).expect("stall again");
    assert!(fs.is_frozen());
    let handle = faults::Fault::handle(&stall).clone();
    drop(stall);
    assert!(!fs.is_frozen(), "the dropped guard thawed");
    assert!(handle.is_healed());

    // Fill: a write hangs or fails with 28/1021.
    let fill = DiskFault::inject(fs.clone(), DiskSpec::Fill).expect("fill");
    assert!(fs.free_bytes().unwrap() < 128 * 1024 * 1024 / 20);
    let mut s = Session::connect(&sb.addr("m1"), &sb.admin(), opts(Duration::from_secs(3)))
        .await
        .unwrap();
    let pad = "y".repeat(1900);
    let mut stopped = None;
    for id in 100..2100 {
        match s
            .exec(
                "write",
                &format!("INSERT INTO app.d VALUES ({id}, '{pad}')"),
            )
            .await
        {
            Ok(()) => continue,
            Err(ProbeError::Timeout { .. }) => stopped = Some(format!("write {id} hung")),
            Err(ProbeError::Server { code, message }) if code == 28 || code == 1021 => {
                stopped = Some(format!("write {id}: {code} {message}"))
            }
            Err(e) => panic!("write {id}: unexpected {e}"),
        }
        break;
    }
    eprintln!("full disk: {stopped:?}");
    assert!(stopped.is_some(), "2000 writes succeeded on a full disk");
    s.close().await;
    fill.heal().await.expect("free");
    assert_eq!(fill.event().note.as_deref(), Some("space freed"));
    assert!(fs.free_bytes().unwrap() > 64 * 1024 * 1024);
    assert!(fill.is_healed());
}

const SIGNAL_CHILD_ENV: &str = "DRT_DISK_SIGNAL_CHILD";

/// Run by [`disk_fault_sigterm_thaws_a_stalled_disk_before_exit`] in a child process; does
/// nothing otherwise. Freezes a loop filesystem of its own (no server on it) and waits.
#[test]
fn disk_fault_signal_child() {
    let Ok(dir) = std::env::var(SIGNAL_CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    faults::install_signal_heal().expect("install");
    let fs = LoopFs::create("child", &dir.join("data.img"), &dir.join("data"), 64 << 20)
        .expect("loop filesystem")
        .keep();
    let stall = DiskFault::inject(Arc::new(fs), DiskSpec::Stall).expect("stall");
    println!("FROZEN");
    std::thread::sleep(Duration::from_secs(20));
    drop(stall);
    panic!("no signal came");
}

/// Kills the child, then thaws and unmounts what it left, when the test ends.
struct ChildGuard(std::process::Child, std::path::PathBuf);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        loopfs::thaw_under(&self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
        loopfs::release_under(&self.1);
    }
}

#[test]
fn disk_fault_sigterm_thaws_a_stalled_disk_before_exit() {
    if !disk_faults_available("disk_fault_sigterm_thaws_a_stalled_disk_before_exit") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "disk_fault_signal_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SIGNAL_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut child = ChildGuard(child, dir.path().to_path_buf());
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("child output").expect("read");
        if line.contains("FROZEN") {
            break;
        }
    }
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    let t = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "child still runs");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(143));
    // Thawed: a thaw now finds nothing frozen (EINVAL). Had the child left it frozen, this
    // thaw would succeed, and the test fail, with nothing left frozen either way.
    let mount = dir.path().join("data");
    let out = Command::new("fsfreeze")
        .arg("-u")
        .arg(&mount)
        .output()
        .expect("fsfreeze -u");
    assert!(
        !out.status.success(),
        "the child exited with its filesystem still frozen"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Invalid argument"), "{err}");
}

/// The runner without a control plane, semi-sync on, datadirs NOT on loop filesystems: it
/// moves each targeted member onto one before the load, then a stalled replica disk stops
/// nothing and fails nothing over, and a stalled primary disk stops the writes until the
/// thaw; nothing acknowledged is lost either time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fault_runner_moves_members_onto_loop_filesystems_and_heals_on_time() {
    if !disk_faults_available(
        "disk_fault_runner_moves_members_onto_loop_filesystems_and_heals_on_time",
    ) {
        return;
    }
    let root = tempfile::Builder::new()
        .prefix("dbfleet-drt-disk-")
        .tempdir()
        .unwrap();
    let _guard = SandboxGuard::new(root.path(), "drtdiskrun");
    let (sb, _) = Sandbox::up(&UpOptions {
        name: "drtdiskrun".into(),
        replicas: 2,
        semi_sync: true,
        base_port: 25530,
        root: root.path().to_path_buf(),
        tuning: Default::default(),
    })
    .await
    .expect("sandbox up");
    assert!(LoopFs::find(&sb, "m3").unwrap().is_none());
    let creds = sb.credentials().unwrap();
    let target = RunTarget {
        members: sb.manifest().members.iter().map(|m| m.addr()).collect(),
        admin: creds.admin.credentials(),
        app: creds.app.credentials(),
        api: None,
        control_plane_gid: None,
        token: None,
        sandbox: sb.clone(),
    };

    let replica = Scenario::from_toml(
        r#"
name = "stall-m3-disk"
description = "fsfreeze m3's datadir for 4s under load."
[load]
writers = 2
rate_per_s = 100
duration = "8s"
[[fault]]
kind = "stall_disk"
target = "m3"
at = "2s"
heal_after = "4s"
[expect]
failover = "must_not"
primary_changes = 0
lost_writes_allowed = 0
"#,
        "test",
    )
    .unwrap();
    let run = run_once(&replica, &target, CancellationToken::new())
        .await
        .expect("the replica run ran");
    assert!(LoopFs::find(&sb, "m3").unwrap().is_some(), "m3 was moved");
    let report = Report::new(replica, vec![run]);
    eprintln!("{}", report.text());
    assert!(report.pass, "{}", report.text());
    let run = &report.runs[0];
    let healed = run
        .timeline
        .iter()
        .find(|e| e.kind == EventKind::FaultHealed)
        .expect("healed");
    assert!(healed.label.contains("thawed"), "{}", healed.label);

    let primary = Scenario::from_toml(
        r#"
name = "stall-m1-disk"
description = "fsfreeze the primary's datadir for 4s under load, no control plane."
[load]
writers = 2
rate_per_s = 100
duration = "10s"
[[fault]]
kind = "stall_disk"
target = "primary"
at = "2s"
heal_after = "4s"
[expect]
failover = "any"
lost_writes_allowed = 0
"#,
        "test",
    )
    .unwrap();
    let run = run_once(&primary, &target, CancellationToken::new())
        .await
        .expect("the primary run ran");
    assert!(LoopFs::find(&sb, "m1").unwrap().is_some(), "m1 was moved");
    let report = Report::new(primary, vec![run]);
    eprintln!("{}", report.text());
    let run = &report.runs[0];
    assert!(run.aborted.is_none(), "{:?}", run.aborted);
    assert!(run.verified(), "{:?}", run.verification);
    assert!(run.lost.is_empty(), "lost {:?}", run.lost);
    // The writes stopped for about the stall (nobody failed over).
    eprintln!("rto {} ms", run.figures.rto_ms);
    assert!(run.figures.rto_ms >= 3000, "rto {} ms", run.figures.rto_ms);
    assert!(report.pass, "{}", report.text());
    // Nothing stays frozen: a write on m1's filesystem goes through.
    let fs = LoopFs::find(&sb, "m1").unwrap().unwrap();
    assert!(!fs.is_frozen());
    std::fs::write(fs.mountpoint().join("probe"), b"x").expect("write on m1's filesystem");
    std::fs::remove_file(fs.mountpoint().join("probe")).unwrap();
}
