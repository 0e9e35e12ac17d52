//! The rejoin operation: a fenced or stray instance attached as a replica of the cluster's
//! writer, after an errant-GTID check.
//!
//! Steps: `check` (reachable, no errant GTIDs against the writer), `attach` (fenced, then
//! replicating from the writer; its own transactions lost in crash recovery replayed under a
//! lent server_id first). An interrupted rejoin is never resumed: it needs a human.

use std::sync::Arc;
use std::time::Duration;

use model::{GtidState, InstanceAddr, Observation, OperationKind};
use probe::commands::PointAt;
use probe::Credentials;
use serde_json::{json, Value};
use store::{OperationRecord, Settings};

use crate::conns::Conns;
use crate::ops::{errant_against_writer, Op, Outcome, Step, StepResult, Steps};
use crate::registry::OperationSpec;
use crate::{ClusterSetup, Engine, EngineError};

/// The rejoin in the registry of kinds.
pub(crate) struct Rejoin;

impl OperationSpec for Rejoin {
    fn kind(&self) -> OperationKind {
        OperationKind::Rejoin
    }

    fn description(&self) -> &'static str {
        "attach a fenced or stray instance as a replica of the writer, after an errant-GTID check"
    }

    fn steps(&self) -> &'static [&'static str] {
        &["check", "attach"]
    }
}

impl Engine {
    /// Re-attach a fenced or stray instance as a replica of the cluster's writer, after an
    /// errant-GTID check. Refuses, listing the errant GTIDs, when it has any.
    pub async fn rejoin(
        self: &Arc<Self>,
        cluster: &str,
        addr: &InstanceAddr,
    ) -> Result<OperationRecord, EngineError> {
        let (me, cluster, addr) = (self.clone(), cluster.to_string(), addr.clone());
        self.run_operation(async move { me.rejoin_by(&cluster, &addr, "manual").await })
            .await
    }

    /// [`Engine::rejoin`], recorded with `trigger` (`manual`, or `auto` by policy).
    pub(crate) async fn rejoin_by(
        self: &Arc<Self>,
        cluster: &str,
        addr: &InstanceAddr,
        trigger: &str,
    ) -> Result<OperationRecord, EngineError> {
        let setup = self.setup(cluster)?.clone();
        let repl = setup.repl.clone().ok_or_else(|| {
            EngineError::Refused(format!(
                "cluster {cluster} has no replication_credentials: rejoin cannot attach a replica"
            ))
        })?;
        let writer = self
            .store
            .cluster(cluster)
            .await?
            .and_then(|c| c.writer)
            .ok_or_else(|| {
                EngineError::Refused(format!("cluster {cluster} has no writer recorded yet"))
            })?;
        if &writer == addr {
            return Err(EngineError::Refused(format!(
                "{addr} is the cluster's writer"
            )));
        }
        let mut op = Op::begin(
            self,
            cluster,
            OperationKind::Rejoin,
            trigger,
            "check",
            json!({ "instance": addr.to_string(), "writer": writer.to_string() }),
        )
        .await?;
        let mut run = RejoinRun {
            engine: self,
            setup: &setup,
            repl: &repl,
            conns: Conns::new(setup.admin.clone(), self.opts.probe),
            data: json!({ "instance": addr.to_string(), "writer": writer.to_string() }),
            addr: addr.clone(),
            writer,
            obs: None,
        };
        let outcome = match op.run_steps(&mut run, &RejoinStep::ALL).await {
            Ok(()) => Outcome::Succeeded(format!(
                "{addr} rejoined {cluster} as a replica of {}",
                run.writer
            )),
            Err(o) => o,
        };
        op.finish(outcome, run.data).await
    }
}

/// A rejoin's steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RejoinStep {
    /// Reachable, with no errant GTIDs against the writer.
    Check,
    /// Fenced, then replicating from the writer.
    Attach,
}

impl RejoinStep {
    const ALL: [RejoinStep; 2] = [RejoinStep::Check, RejoinStep::Attach];
}

impl Step for RejoinStep {
    fn name(self) -> &'static str {
        match self {
            RejoinStep::Check => "check",
            RejoinStep::Attach => "attach",
        }
    }
}

/// One run of a rejoin: what its steps share.
struct RejoinRun<'a> {
    engine: &'a Engine,
    setup: &'a ClusterSetup,
    repl: &'a Credentials,
    conns: Conns,
    data: Value,
    addr: InstanceAddr,
    writer: InstanceAddr,
    /// The instance as `check` saw it.
    obs: Option<Observation>,
}

impl RejoinRun<'_> {
    async fn check(&mut self) -> StepResult<Value> {
        let (addr, writer) = (&self.addr, &self.writer);
        let obs = self.conns.observe(addr).await;
        if obs.state().is_none() {
            return Err(Outcome::Failed(format!("{addr} is unreachable")));
        }
        let cluster = &self.setup.spec.name;
        let errant = errant_against_writer(&*self.engine.store, cluster, &obs, &mut self.conns)
            .await
            .map_err(Outcome::Failed)?;
        self.data["errant"] = json!(errant);
        if !errant.is_empty() {
            return Err(Outcome::Failed(format!(
                "{addr} has errant GTIDs the writer {writer} lacks: {}; it must not rejoin as is (rebuild it, or remove the transactions by hand)",
                errant.join(", ")
            )));
        }
        self.obs = Some(obs);
        Ok(json!({ "errant": [] }))
    }

    async fn attach(&mut self) -> StepResult<Value> {
        let engine = self.engine;
        let cluster = &self.setup.spec.name;
        let (addr, writer) = (&self.addr, &self.writer);
        let (conns, data) = (&mut self.conns, &mut self.data);
        let obs = self
            .obs
            .as_ref()
            .ok_or_else(|| Outcome::Failed(format!("{addr} was not checked")))?;
        // The fence guard's kills would end this step's connections; the step fences the
        // instance itself.
        engine.stop_guard(addr);
        conns
            .fence(addr)
            .await
            .map_err(|e| Outcome::Failed(format!("set {addr} read-only: {e}")))?;
        // Its own transactions that it lost in crash recovery but the writer holds would
        // be skipped (same server_id): it replicates them under a lent server_id.
        let w = conns.observe(writer).await;
        let lost = own_lost(obs, &w);
        let own_id = obs.state().map(|s| s.server_id).unwrap_or_default();
        if !lost.is_empty() {
            data["own_transactions_replayed"] =
                json!(lost.iter().map(ToString::to_string).collect::<Vec<_>>());
            conns
                .lend_server_id(addr, lent_server_id(own_id))
                .await
                .map_err(|e| Outcome::Failed(format!("lend {addr} a server_id: {e}")))?;
        }
        // From its own binlog position, unless it replays its own lost transactions.
        let to = PointAt {
            source: writer,
            creds: self.repl,
            semi_sync: self.setup.spec.semi_sync,
            from_current_pos: lost.is_empty(),
            delay_s: None,
        };
        conns
            .repoint(addr, &to)
            .await
            .map_err(|e| Outcome::Failed(format!("attach {addr} to {writer}: {e}")))?;
        if !lost.is_empty() {
            conns
                .wait_applied(addr, &lost, Duration::from_secs(30))
                .await
                .map_err(|e| Outcome::Failed(format!("{addr} did not replay its own transactions {} from {writer}: {e}; it still runs under a lent server_id", data["own_transactions_replayed"])))?;
            conns
                .restart_with_server_id(addr, own_id)
                .await
                .map_err(|e| {
                    Outcome::Failed(format!("give {addr} its server_id {own_id} back: {e}"))
                })?;
        }
        conns
            .wait_replicating(addr, writer, Duration::from_secs(10))
            .await
            .map_err(|e| {
                Outcome::Failed(format!("{addr} does not replicate from {writer}: {e}"))
            })?;
        let _ = engine.store.unmark_fenced(cluster, addr).await;
        engine.stop_guard(addr);
        // Fenced again one day, its return is news again, and whether that fence keeps
        // semi-sync on is for that failover to say.
        engine
            .returned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
        engine.forget_keep_semi_sync(addr);
        Ok(json!({}))
    }
}

impl Steps for RejoinRun<'_> {
    type Step = RejoinStep;

    fn record(&self) -> Value {
        self.data.clone()
    }

    fn conns(&mut self) -> &mut Conns {
        &mut self.conns
    }

    fn audited(&self, _step: RejoinStep, _after: bool) -> Vec<InstanceAddr> {
        vec![self.addr.clone(), self.writer.clone()]
    }

    async fn run(&mut self, _op: &mut Op<'_>, step: RejoinStep) -> StepResult<Value> {
        match step {
            RejoinStep::Check => self.check().await,
            RejoinStep::Attach => self.attach().await,
        }
    }
}

/// The transactions `obs`'s server wrote that the writer (`w`) holds and it lacks (see
/// [`model::gtid::own_transactions_held_elsewhere`]); empty unless both are MariaDB.
fn own_lost(obs: &Observation, w: &Observation) -> Vec<model::gtid::MariadbGtid> {
    match (obs.state(), w.state()) {
        (Some(o), Some(w)) => match (&o.gtid, &w.gtid) {
            (
                GtidState::Mariadb {
                    binlog_state: mine, ..
                },
                GtidState::Mariadb {
                    binlog_state: theirs,
                    ..
                },
            ) => model::gtid::own_transactions_held_elsewhere(o.server_id, mine, theirs),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// A server_id lent to a rejoining server while it replays its own transactions: far from
/// the small ids clusters use, never 0, and different from `own`.
fn lent_server_id(own: u32) -> u32 {
    let lent = u32::MAX - 1 - own.min(u32::MAX - 1);
    if lent == own || lent == 0 {
        own - 1
    } else {
        lent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_are_the_listed_ones_in_order() {
        let names: Vec<&str> = RejoinStep::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, Rejoin.steps());
    }

    #[test]
    fn a_lent_server_id_is_never_zero_nor_the_own_one() {
        for own in [1, 2, 3, 100, 2_147_483_647, 4_294_967_294, u32::MAX] {
            let lent = lent_server_id(own);
            assert_ne!(lent, own, "{own}");
            assert_ne!(lent, 0, "{own}");
        }
        assert_eq!(lent_server_id(1), 4_294_967_293);
    }
}
