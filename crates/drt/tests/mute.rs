//! The guard's judgement of a second writable server, against a real sandbox (ports
//! 27200..27202): a replaced primary that resumes with `read_only=OFF`, lossless semi-sync
//! and no replica left is writable but cannot acknowledge (`drt::runner::mute`), and really
//! acknowledges nothing; once a replica replicates from it again, it can, and does.

use std::time::Duration;

use drt::runner::{look_all, mute, Look};
use model::InstanceAddr;
use probe::{Credentials, ProbeOptions, Session};
use sandbox::testing::{Frozen, TestSandbox};

const T: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(2),
    query_timeout: Duration::from_secs(10),
};

async fn exec(addr: &InstanceAddr, creds: &Credentials, sql: &str) {
    let mut s = Session::connect(addr, creds, T).await.unwrap();
    s.exec("test statement", sql)
        .await
        .unwrap_or_else(|e| panic!("{addr}: {sql}: {e}"));
    s.close().await;
}

fn find<'a>(looks: &'a [Look], a: &InstanceAddr) -> &'a Look {
    looks.iter().find(|l| &l.addr == a).unwrap()
}

/// An `INSERT` as the application account, within `within`: whether it was acknowledged.
async fn app_insert(addr: &InstanceAddr, app: &Credentials, id: u32, within: Duration) -> bool {
    let mut s = Session::connect(addr, app, T).await.unwrap();
    let sql = format!("INSERT INTO app.m VALUES ({id})");
    matches!(
        tokio::time::timeout(within, s.exec("insert", &sql)).await,
        Ok(Ok(()))
    )
}

#[tokio::test]
async fn a_resumed_old_primary_with_no_replica_is_writable_but_cannot_acknowledge() {
    let sb = TestSandbox::up_with("drt-mute", 2, 27200, true).await;
    let creds = sb.credentials().unwrap();
    let (admin, app) = (creds.admin.credentials(), creds.app.credentials());
    let (m1, m2, m3) = (sb.addr("m1"), sb.addr("m2"), sb.addr("m3"));
    let members = vec![m1.clone(), m2.clone(), m3.clone()];
    exec(&m1, &admin, "CREATE TABLE app.m (id INT PRIMARY KEY)").await;
    assert!(app_insert(&m1, &app, 1, Duration::from_secs(10)).await);

    // A failover by hand while m1 is frozen: both replicas stop, m2 opens writes.
    let frozen = Frozen::freeze(&sb, "m1");
    let stops = [&m2, &m3].map(|r| {
        let (r, admin) = (r.clone(), admin.clone());
        tokio::spawn(async move { exec(&r, &admin, "STOP SLAVE").await })
    });
    for s in stops {
        s.await.unwrap();
    }
    exec(&m2, &admin, "RESET SLAVE ALL").await;
    exec(&m2, &admin, "SET GLOBAL read_only=OFF").await;
    let prev = look_all(&members, &admin).await;
    assert!(find(&prev, &m1).state.is_none(), "m1 is frozen");

    // m1 resumes, not fenced: two writable servers, but m1 cannot acknowledge.
    frozen.thaw();
    let now = look_all(&members, &admin).await;
    assert!(find(&now, &m1).writable() && find(&now, &m2).writable());
    assert!(
        mute(find(&now, &m1), &prev, &now),
        "m1: lossless semi-sync, nobody replicates from it: {:?}",
        find(&now, &m1).state.as_ref().map(|s| &s.semi_sync)
    );
    // Without the look before, it cannot be told.
    assert!(!mute(find(&now, &m1), &[], &now));
    // A member whose full read hangs (a frozen disk) is judged by its write gate alone,
    // which reads what the full read does.
    let gated = gate_only(&now, &m1, &admin).await;
    let gate = find(&gated, &m1).gate.clone().expect("m1's write gate");
    let full = find(&now, &m1).state.clone().unwrap();
    assert_eq!(
        (gate.read_only, &gate.semi_sync),
        (full.read_only, &full.semi_sync)
    );
    assert!(find(&gated, &m1).writable());
    assert!(mute(find(&gated, &m1), &prev, &gated));
    // With neither read, it is not judged mute.
    let mut unread = gated.clone();
    unread.iter_mut().find(|l| l.addr == m1).unwrap().gate = None;
    assert!(!find(&unread, &m1).writable());
    assert!(!mute(find(&unread, &m1), &prev, &unread));
    // And it is the truth: a write on m1 waits for an ack that never comes.
    assert!(
        !app_insert(&m1, &app, 2, Duration::from_secs(3)).await,
        "m1 acknowledged a write with no replica"
    );

    // m3 replicates from m1 again: now m1 can acknowledge, and does.
    exec(&m3, &admin, "START SLAVE").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = look_all(&members, &admin).await;
        if !mute(find(&again, &m1), &now, &again) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "m1 still judged mute with m3 replicating from it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        app_insert(&m1, &app, 3, Duration::from_secs(10)).await,
        "m1 acknowledges once m3 replicates from it"
    );
    let later = look_all(&members, &admin).await;
    assert!(!mute(find(&later, &m1), &now, &later));
    let gated = gate_only(&later, &m1, &admin).await;
    assert!(
        !mute(find(&gated, &m1), &now, &gated),
        "m3 replicates from m1"
    );

    // m3 leaves m1 again with no write in between (as a failover's killed IO thread):
    // the look before saw m3 attached, but m1's count of acknowledged commits did not
    // move and it counts no semi-sync client now: it acknowledged nothing since.
    let attached = look_all(&members, &admin).await;
    assert!(!mute(find(&attached, &m1), &later, &attached));
    exec(&m3, &admin, "STOP SLAVE").await;
    let gone = detached(&members, &admin, &m1).await;
    // By the write gates alone too: the count of acknowledged commits is in them.
    let (attached_gated, gone_gated) = (
        gate_only(&attached, &m1, &admin).await,
        gate_only(&gone, &m1, &admin).await,
    );
    assert!(mute(find(&gone_gated, &m1), &attached_gated, &gone_gated));
    assert!(
        mute(find(&gone, &m1), &attached, &gone),
        "m1 acknowledged nothing between the looks: {:?} then {:?}",
        find(&attached, &m1).state.as_ref().map(|s| &s.semi_sync),
        find(&gone, &m1).state.as_ref().map(|s| &s.semi_sync)
    );
    // With a write acknowledged between the two looks, it cannot be told mute.
    exec(&m3, &admin, "START SLAVE").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let attached = loop {
        let l = look_all(&members, &admin).await;
        if find(&l, &m1)
            .state
            .as_ref()
            .is_some_and(|s| s.semi_sync.source_clients > 0)
        {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "m3 never acked for m1 again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(app_insert(&m1, &app, 4, Duration::from_secs(10)).await);
    exec(&m3, &admin, "STOP SLAVE").await;
    let gone = detached(&members, &admin, &m1).await;
    assert!(!mute(find(&gone, &m1), &attached, &gone));
}

/// `looks` with `addr` read as a member whose full read hung: no state, its write gate read
/// now.
async fn gate_only(looks: &[Look], addr: &InstanceAddr, admin: &Credentials) -> Vec<Look> {
    let mut s = Session::connect(addr, admin, T).await.unwrap();
    let gate = s.write_gate().await.unwrap();
    s.close().await;
    let mut out = looks.to_vec();
    let l = out.iter_mut().find(|l| &l.addr == addr).unwrap();
    l.state = None;
    l.gate = Some(gate);
    out
}

/// A look once `primary` counts no semi-sync client (at most 10 s).
async fn detached(
    members: &[InstanceAddr],
    admin: &Credentials,
    primary: &InstanceAddr,
) -> Vec<Look> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let l = look_all(members, admin).await;
        if find(&l, primary)
            .state
            .as_ref()
            .is_some_and(|s| s.semi_sync.source_clients == 0)
        {
            return l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{primary} still counts a semi-sync client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
