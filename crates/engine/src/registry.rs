//! The registry of operation kinds: what each kind ([`OperationKind`]) is, its steps, and
//! what an operation of it left `running` by a crash does when a node becomes leader
//! (resume, or undo what is safe to undo and hand it to a human).
//!
//! Adding a kind is a variant of [`OperationKind`] (in `model`), a module that implements
//! [`OperationSpec`] (and runs its steps through `Op::run_step`, with a step enum and a
//! state that implements `ops::Steps`), and one line in [`KINDS`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use model::OperationKind;
use store::OperationRecord;
use tracing::warn;

use crate::ops::Op;
use crate::{Engine, EngineError};

/// A boxed, sendable future (what [`OperationSpec`]'s methods return, so that the trait
/// stays usable as `dyn`).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the engine knows of one kind of operation.
pub(crate) trait OperationSpec: Send + Sync {
    /// The kind it describes.
    fn kind(&self) -> OperationKind;

    /// One line for humans: what an operation of this kind does.
    fn description(&self) -> &'static str;

    /// Its steps' names, in order: what the record says an operation is at, and the
    /// failpoints `<kind>.<step>.before|after`.
    fn steps(&self) -> &'static [&'static str];

    /// Undo what is safe to undo of an operation of this kind that was interrupted and is
    /// not resumed; returns a note for its message (empty when nothing was undone).
    fn undo_interrupted<'a>(
        &'a self,
        _engine: &'a Engine,
        _op: &'a Op<'_>,
    ) -> BoxFuture<'a, String> {
        Box::pin(async { String::new() })
    }

    /// An operation of this kind found `running` when this node leads (its node crashed
    /// or lost the lead): go on with it, or end it `needs_human` after undoing what is
    /// safe to undo. Errors leave it `running`, to be judged again later. By default it
    /// is never resumed: [`OperationSpec::undo_interrupted`], then `needs_human`.
    fn resume(
        &self,
        engine: Arc<Engine>,
        rec: OperationRecord,
    ) -> BoxFuture<'static, Result<(), EngineError>> {
        let kind = self.kind();
        Box::pin(async move {
            let op = Op::adopt(&engine, rec).await?;
            let note = match spec(kind) {
                Some(s) => s.undo_interrupted(&engine, &op).await,
                None => String::new(),
            };
            op.give_up_interrupted(note).await;
            Ok(())
        })
    }
}

/// Every kind the engine runs: one line per kind.
static KINDS: &[&dyn OperationSpec] = &[
    &crate::failover::Failover,
    &crate::switchover::Switchover,
    &crate::rejoin::Rejoin,
];

/// The registered spec of `kind`.
pub(crate) fn spec(kind: OperationKind) -> Option<&'static dyn OperationSpec> {
    KINDS.iter().copied().find(|s| s.kind() == kind)
}

/// Every operation kind with its description, in the order of [`OperationKind::ALL`].
pub fn operation_kinds() -> Vec<(OperationKind, &'static str)> {
    OperationKind::ALL
        .into_iter()
        .filter_map(|k| spec(k).map(|s| (k, s.description())))
        .collect()
}

/// The steps of `kind`, in order (empty for a kind this build does not run): the names
/// an operation's record shows, and its failpoints `<kind>.<step>.before|after`.
pub fn operation_steps(kind: OperationKind) -> &'static [&'static str] {
    spec(kind).map(|s| s.steps()).unwrap_or(&[])
}

/// Judge an operation left `running`: its kind's [`OperationSpec::resume`]. A kind this
/// build does not know (written by another version) is never guessed at: it needs a
/// human.
pub(crate) async fn resume(engine: Arc<Engine>, rec: OperationRecord) -> Result<(), EngineError> {
    match OperationKind::of(&rec.kind).and_then(spec) {
        Some(s) => s.resume(engine, rec).await,
        None => {
            warn!(operation = rec.id, kind = %rec.kind, "an interrupted operation of an unknown kind needs a human");
            engine.interrupted_needs_human(rec).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered_once_with_a_description() {
        for kind in OperationKind::ALL {
            let n = KINDS.iter().filter(|s| s.kind() == kind).count();
            assert_eq!(n, 1, "{kind} is registered {n} times");
            assert!(!spec(kind).unwrap().description().is_empty(), "{kind}");
            assert!(!operation_steps(kind).is_empty(), "{kind}");
        }
        assert_eq!(KINDS.len(), OperationKind::ALL.len());
        assert_eq!(
            operation_kinds()
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>(),
            OperationKind::ALL
        );
    }
}
