//! A member's datadir on a loop-mounted ext4 filesystem: it still replicates, a freeze blocks
//! its writes until the thaw, and a full filesystem stops them until space is freed.
//! Needs root and a loop device (see `sandbox::testing::disk_faults_available`).

use std::time::{Duration, Instant};

use probe::{ProbeError, ProbeOptions, Session};
use sandbox::loopfs::{LoopFs, DEFAULT_SIZE};
use sandbox::testing::{disk_faults_available, TestSandbox};

/// Ports 25500-25509 belong to this file.
const BASE_PORT: u16 = 25500;

fn opts(query: Duration) -> ProbeOptions {
    ProbeOptions {
        connect_timeout: Duration::from_secs(5),
        query_timeout: query,
    }
}

async fn session(sb: &TestSandbox, member: &str, query: Duration) -> Session {
    Session::connect(&sb.addr(member), &sb.admin(), opts(query))
        .await
        .expect("connect")
}

async fn count(sb: &TestSandbox, member: &str) -> u64 {
    let mut s = session(sb, member, Duration::from_secs(10)).await;
    let rows = s
        .query_rows("count", "SELECT COUNT(*) AS n FROM app.t")
        .await
        .expect("count");
    s.close().await;
    rows[0]["n"].as_deref().unwrap().parse().unwrap()
}

/// Wait (bounded) until `member` holds `n` rows.
async fn wait_count(sb: &TestSandbox, member: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = count(sb, member).await;
        if c == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{member} holds {c} rows, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fault_loopfs_freezes_and_fills_a_primary_that_still_replicates() {
    if !disk_faults_available("disk_fault_loopfs_freezes_and_fills_a_primary_that_still_replicates")
    {
        return;
    }
    let sb = TestSandbox::up("loopfs", 1, BASE_PORT).await;
    // Declared after the sandbox: dropped (thawed, freed) before the sandbox's guard kills.
    let fs = LoopFs::mount_member(&sb, "m1", DEFAULT_SIZE)
        .await
        .expect("move m1 onto a loop filesystem");
    let datadir = sb.member("m1").unwrap().datadir(sb.dir());
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounted.contains(&format!(" {} ", fs.mountpoint().display())),
        "{} is not a mount point",
        datadir.display()
    );
    assert!(
        !datadir.join("lost+found").exists(),
        "lost+found would be a database"
    );

    // It still serves and replicates.
    let mut w = session(&sb, "m1", Duration::from_secs(10)).await;
    w.exec(
        "create",
        "CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(2000))",
    )
    .await
    .expect("create table on the loop filesystem");
    w.exec("write", "INSERT INTO app.t (pad) VALUES ('before')")
        .await
        .expect("write");
    wait_count(&sb, "m2", 1).await;

    // Frozen: a write blocks, and completes after the thaw.
    fs.freeze().expect("freeze");
    assert!(fs.is_frozen());
    let addr = sb.addr("m1");
    let admin = sb.admin();
    let blocked = tokio::spawn(async move {
        let mut s = Session::connect(&addr, &admin, opts(Duration::from_secs(60)))
            .await
            .expect("connect while frozen");
        let r = s
            .exec("write", "INSERT INTO app.t (pad) VALUES ('frozen')")
            .await;
        s.close().await;
        r
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !blocked.is_finished(),
        "a write completed on a frozen filesystem"
    );
    // The server still answers what needs no disk.
    let mut r = session(&sb, "m1", Duration::from_secs(10)).await;
    r.query_rows("read", "SELECT @@read_only AS ro")
        .await
        .expect("the server answers while frozen");
    r.close().await;
    fs.thaw().expect("thaw");
    assert!(!fs.is_frozen());
    tokio::time::timeout(Duration::from_secs(30), blocked)
        .await
        .expect("the blocked write completes after the thaw")
        .unwrap()
        .expect("the blocked write succeeds");
    wait_count(&sb, "m2", 2).await;

    // Full: a write fails with 28/1021, or hangs (MariaDB waits for space).
    let before = fs.free_bytes().expect("free space");
    let filled = fs.fill().expect("fill");
    assert!(
        filled > 0 && filled <= before,
        "filled {filled} of {before}"
    );
    // What stays free is ext4's metadata reserve (2 % at most), less than root's 5 %.
    let left = fs.free_bytes().unwrap();
    assert!(
        left < DEFAULT_SIZE / 20,
        "{left} bytes still free after fill"
    );
    let pad = "x".repeat(2000);
    let mut stopped = None;
    let mut s = session(&sb, "m1", Duration::from_secs(3)).await;
    for i in 0..2000 {
        match s
            .exec(
                "write",
                &format!("INSERT INTO app.t (pad) VALUES ('{pad}')"),
            )
            .await
        {
            Ok(()) => continue,
            Err(ProbeError::Timeout { .. }) => {
                stopped = Some(format!("write {i} hung"));
                break;
            }
            Err(ProbeError::Server { code, message }) if code == 28 || code == 1021 => {
                stopped = Some(format!("write {i} failed with {code}: {message}"));
                break;
            }
            Err(e) => panic!("write {i} on a full filesystem: unexpected {e}"),
        }
    }
    let stopped = stopped.expect("2000 writes of 2 KB succeeded on a full filesystem");
    eprintln!("full filesystem: {stopped}");
    s.close().await;

    // Freed: writes complete again (MariaDB retries a full disk once a minute).
    fs.free().expect("free");
    assert!(fs.free_bytes().unwrap() > DEFAULT_SIZE / 2);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut s = session(&sb, "m1", Duration::from_secs(5)).await;
        let r = s
            .exec("write", "INSERT INTO app.t (pad) VALUES ('after')")
            .await;
        s.close().await;
        match r {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no write completes after the space came back: {e}"
            ),
        }
    }
    let n = count(&sb, "m1").await;
    wait_count(&sb, "m2", n).await;
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fault_loopfs_guard_thaws_and_frees_on_panic() {
    if !disk_faults_available("disk_fault_loopfs_guard_thaws_and_frees_on_panic") {
        return;
    }
    let sb = TestSandbox::up("loopfs-guard", 1, BASE_PORT + 5).await;
    let fs = LoopFs::mount_member(&sb, "m2", DEFAULT_SIZE)
        .await
        .expect("move m2 onto a loop filesystem");
    let mountpoint = fs.mountpoint().to_path_buf();
    let fs = std::sync::Arc::new(fs);
    let inner = fs.clone();
    // A panic while frozen and full unwinds through the guard.
    let r = std::thread::spawn(move || {
        inner.fill().expect("fill");
        inner.freeze().expect("freeze");
        panic!("a test failed while the filesystem was frozen");
    })
    .join();
    assert!(r.is_err());
    assert!(
        fs.is_frozen(),
        "the panic alone thaws nothing while a handle lives"
    );
    let fs = std::sync::Arc::into_inner(fs).expect("one handle left");
    drop(fs);
    // Thawed and unmounted: the replica's server keeps running, and the directory is free.
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounted.contains(&format!(" {} ", mountpoint.display())),
        "still mounted"
    );
    let mut s = session(&sb, "m2", Duration::from_secs(10)).await;
    s.query_rows("read", "SELECT 1 AS one")
        .await
        .expect("m2 answers");
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fault_sandbox_made_with_loop_datadirs_replicates_and_cleans_up() {
    if !disk_faults_available("disk_fault_sandbox_made_with_loop_datadirs_replicates_and_cleans_up")
    {
        return;
    }
    let tuning = sandbox::Tuning {
        loop_datadir_mb: 128,
        ..sandbox::Tuning::default()
    };
    let sb = TestSandbox::up_tuned("loopdirs", 1, BASE_PORT + 10, true, tuning).await;
    let dir = sb.dir().to_path_buf();
    for m in ["m1", "m2"] {
        let fs = LoopFs::find(&sb, m)
            .expect("find")
            .unwrap_or_else(|| panic!("{m}'s datadir is not on a loop filesystem"));
        assert!(fs.device().starts_with("/dev/loop"));
        // A found handle leaves the filesystem mounted when it drops.
        drop(fs);
        assert!(LoopFs::find(&sb, m).unwrap().is_some(), "{m} still mounted");
    }
    let mut w = session(&sb, "m1", Duration::from_secs(10)).await;
    w.exec(
        "create",
        "CREATE TABLE app.t (id INT PRIMARY KEY, pad VARCHAR(2000))",
    )
    .await
    .expect("create");
    w.exec("write", "INSERT INTO app.t VALUES (1, 'a')")
        .await
        .expect("write");
    w.close().await;
    wait_count(&sb, "m2", 1).await;

    // A stop and start keeps the data (the filesystem stays mounted).
    sb.stop("m2").unwrap();
    sb.start("m2").await.expect("start m2");
    wait_count(&sb, "m2", 1).await;

    // `down` unmounts and detaches everything under the sandbox.
    let root = dir.parent().unwrap().to_path_buf();
    sandbox::Sandbox::down(&root, "loopdirs").expect("down");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounted.contains(&format!(
            " {}/",
            dir.canonicalize().unwrap_or(dir.clone()).display()
        )),
        "a filesystem is still mounted under {}",
        dir.display()
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn disk_fault_recover_under_thaws_and_frees_what_a_killed_run_left() {
    if !disk_faults_available("disk_fault_recover_under_thaws_and_frees_what_a_killed_run_left") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = LoopFs::create(
        "x",
        &dir.path().join("data.img"),
        &dir.path().join("data"),
        64 << 20,
    )
    .expect("loop filesystem");
    assert!(
        sandbox::loopfs::recover_under(dir.path()).is_empty(),
        "nothing to do yet"
    );
    fs.fill().expect("fill");
    fs.freeze().expect("freeze");
    // As a SIGKILLed run would: the handle is gone without its drop.
    let mountpoint = fs.mountpoint().to_path_buf();
    std::mem::forget(fs);
    let done = sandbox::loopfs::recover_under(dir.path());
    eprintln!("{done:?}");
    assert!(done.iter().any(|d| d.starts_with("thawed")), "{done:?}");
    assert!(done.iter().any(|d| d.starts_with("freed")), "{done:?}");
    // Thawed and freed: a write goes through, and the space is back.
    std::fs::write(mountpoint.join("probe"), vec![0u8; 1 << 20]).expect("write");
    sandbox::loopfs::release_under(dir.path());
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounted.contains(&format!(" {} ", mountpoint.display())));
}
