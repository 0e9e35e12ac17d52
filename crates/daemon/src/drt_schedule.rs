//! Scheduled DRTs ("game days"): the daemon runs each `[[drt.schedule]]` scenario every
//! `every`, on the leader only and one at a time, stores the report with its events, and
//! raises an alert (an `error` event, and the alert notifiers when configured) when the run
//! fails an expectation or cannot run at all. A later run of the same scenario on the same
//! cluster that passes resolves that alert.
//!
//! After each run the cluster is put back together as `dbfleet drt run --repeat` does
//! between runs: stopped members started, a fenced old primary rejoined through the
//! daemon's own API.

use std::sync::Arc;

use drt::report::Report;
use drt::runner::{run_once, RunTarget};
use drt::scenario::{Overrides, Scenario};
use sandbox::Sandbox;
use server::drt_routes::{save_run, DrtControl, RunningDrt};
use store::{kinds, EventLevel, NewEvent, Store};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How a scheduled run ended, as the outcome hook is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DrtOutcome {
    /// It failed an expectation or could not run: page.
    Failed,
    /// It passed: resolve the page of an earlier failure, if one is open.
    Passed,
}

/// Told about every scheduled run's outcome: `(cluster, scenario, outcome, text)`.
pub(crate) type OutcomeHook = Arc<dyn Fn(&str, &str, DrtOutcome, String) + Send + Sync>;

/// What a scheduled run needs from the daemon.
#[derive(Clone)]
pub(crate) struct Scheduler {
    pub store: Arc<dyn Store>,
    pub engine: Arc<engine::Engine>,
    pub drt: DrtControl,
    /// The daemon's own API, for the control plane's events and switchovers.
    pub api: String,
    /// A token of the daemon's own, for switchovers and rejoins. Never logged.
    pub token: Option<String>,
    /// Told about each scheduled run's outcome: a failure pages (the alert notifiers), a
    /// pass resolves that page.
    pub on_failure: Option<OutcomeHook>,
}

/// One task per schedule entry; they end when `cancel` is cancelled.
pub(crate) fn spawn(
    schedules: &[config::DrtSchedule],
    s: Scheduler,
    cancel: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    // One DRT at a time in this daemon.
    let one = Arc::new(tokio::sync::Mutex::new(()));
    schedules
        .iter()
        .cloned()
        .map(|sched| {
            let s = s.clone();
            let cancel = cancel.clone();
            let one = one.clone();
            tokio::spawn(async move {
                let mut wait = sched.first_after.unwrap_or(sched.every);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = sched.every;
                    if !s.engine.is_leader() {
                        continue;
                    }
                    let _turn = one.lock().await;
                    if cancel.is_cancelled() {
                        return;
                    }
                    s.run(&sched, &cancel).await;
                }
            })
        })
        .collect()
}

use model::clock::now_ms;

impl Scheduler {
    async fn event(&self, cluster: &str, kind: &str, level: EventLevel, message: String) {
        let ev = NewEvent::new(now_ms(), kind, level, message).with_cluster(cluster.to_string());
        if let Err(e) = self.store.append_event(&ev).await {
            warn!(error = %e, "cannot append a DRT event");
        }
    }

    /// Run one scheduled DRT and record it; never fails (a failure is an event and an alert).
    async fn run(&self, sched: &config::DrtSchedule, daemon_cancel: &CancellationToken) {
        let cluster = sched.cluster.as_str();
        match self.try_run(sched, daemon_cancel).await {
            Ok((id, report)) if report.pass => {
                if let Some(f) = &self.on_failure {
                    let text = format!(
                        "scheduled DRT {} on {cluster} passed; see dbfleet drt report {id}",
                        sched.scenario
                    );
                    f(cluster, &sched.scenario, DrtOutcome::Passed, text);
                }
            }
            Ok((id, report)) => {
                let why = report
                    .runs
                    .iter()
                    .find_map(|r| r.aborted.clone())
                    .unwrap_or_else(|| "an expectation failed".into());
                let text = format!(
                    "scheduled DRT {} on {cluster} FAILED ({why}); see dbfleet drt report {id}",
                    sched.scenario
                );
                warn!("{text}");
                if let Some(f) = &self.on_failure {
                    f(cluster, &sched.scenario, DrtOutcome::Failed, text);
                }
            }
            Err(e) => {
                let text = format!(
                    "scheduled DRT {} on {cluster} could not run: {e:#}",
                    sched.scenario
                );
                warn!("{text}");
                self.event(
                    cluster,
                    kinds::DRT_FINISHED,
                    EventLevel::Error,
                    text.clone(),
                )
                .await;
                if let Some(f) = &self.on_failure {
                    f(cluster, &sched.scenario, DrtOutcome::Failed, text);
                }
            }
        }
    }

    async fn try_run(
        &self,
        sched: &config::DrtSchedule,
        daemon_cancel: &CancellationToken,
    ) -> anyhow::Result<(String, Report)> {
        let scenario = Scenario::resolve(&sched.scenario)?.with_overrides(&Overrides {
            cluster: Some(sched.cluster.clone()),
            duration: sched.duration,
            ..Default::default()
        })?;
        let root = sched
            .sandbox_dir
            .clone()
            .unwrap_or_else(sandbox::default_root);
        let sb = Sandbox::open(&root, &sched.sandbox)?;
        let creds = sb.credentials()?;
        let target = RunTarget {
            members: sb.manifest().members.iter().map(|m| m.addr()).collect(),
            admin: creds.admin.credentials(),
            app: creds.app.credentials(),
            api: Some(self.api.clone()),
            control_plane_gid: None,
            token: self.token.clone(),
            sandbox: sb.clone(),
        };
        drt::runner::check_supported(&scenario, &target)?;
        let cancel = daemon_cancel.child_token();
        self.drt.started(RunningDrt {
            scenario: scenario.name.clone(),
            cluster: sched.cluster.clone(),
            started_ms: now_ms(),
            cancel: cancel.clone(),
        });
        self.event(
            &sched.cluster,
            kinds::DRT_STARTED,
            EventLevel::Warning,
            format!(
                "scheduled DRT {} started on {}: faults are injected on purpose",
                scenario.name, sched.cluster
            ),
        )
        .await;
        info!(scenario = %scenario.name, cluster = %sched.cluster, "scheduled DRT started");
        let result = run_once(&scenario, &target, cancel).await;
        self.drt.finished();
        let run = result?;
        let report = Report::new(scenario.clone(), vec![run]);
        let id = save_run(self.store.as_ref(), &report, "schedule").await?.id;
        info!(%id, pass = report.pass, "scheduled DRT finished");
        // Put the cluster back together for the next game day.
        let client = match &self.token {
            Some(t) => Some(api::Client::new(&self.api, Some(t.clone()))?),
            None => None,
        };
        if let Err(e) = drt::between::restore(&sb, &target, client.as_ref(), &sched.cluster).await {
            self.event(
                &sched.cluster,
                kinds::DRT_FINISHED,
                EventLevel::Error,
                format!("after the scheduled DRT {id}, the cluster could not be restored: {e}"),
            )
            .await;
        }
        Ok((id, report))
    }
}
