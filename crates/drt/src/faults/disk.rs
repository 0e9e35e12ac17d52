//! Disk faults on a sandbox member whose datadir is on a loop filesystem
//! ([`sandbox::loopfs::LoopFs`]): a stalled disk (`fsfreeze -f` until healed) and a full
//! disk (`fallocate` up to the last free block until healed).
//!
//! A write to a frozen filesystem blocks in the kernel, and its writer cannot be killed
//! until the thaw: the heal (thaw, or free, which thaws first) is registered before the
//! fault is injected, so the guard's drop, the run's end, an abort and the signal hook all
//! thaw. The heal is idempotent.

use std::sync::Arc;

use sandbox::loopfs::{LoopFs, LoopFsError};
use sandbox::Sandbox;

use super::{guard_methods, FaultError, FaultHandle, FaultKind};

/// What a [`DiskFault`] does to a member's datadir filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskSpec {
    /// `fsfreeze -f`: every write blocks until healed by `fsfreeze -u`.
    Stall,
    /// Allocate every free block (root's reserve too): writes fail or wait with ENOSPC
    /// until healed by freeing them.
    Fill,
}

/// A stalled or full datadir filesystem.
#[must_use = "a fault is healed when its guard is dropped"]
#[derive(Debug)]
pub struct DiskFault {
    handle: FaultHandle,
    fs: Arc<LoopFs>,
}

/// The loop filesystem on `member`'s datadir, or an error that says how to get one.
pub fn member_loopfs(sb: &Sandbox, member: &str) -> Result<LoopFs, FaultError> {
    let sandbox_err = |e: LoopFsError| match e {
        LoopFsError::Sandbox(error) => FaultError::Sandbox {
            member: member.to_string(),
            error,
        },
        other => FaultError::Precondition(format!("{member}: {other}")),
    };
    LoopFs::find(sb, member)
        .map_err(sandbox_err)?
        .ok_or_else(|| {
            FaultError::Precondition(format!(
                "{member}'s datadir is not on a loop filesystem, which disk faults freeze and \
                 fill: make the sandbox with `dbfleet sandbox up --loop-datadirs` (root and a \
                 free loop device per member)"
            ))
        })
}

impl DiskFault {
    /// Stall or fill `fs`. The heal is registered first, so an interruption while
    /// injecting still thaws and frees.
    pub fn inject(fs: Arc<LoopFs>, spec: DiskSpec) -> Result<Self, FaultError> {
        let member = fs.member().to_string();
        let mount = fs.mountpoint().display().to_string();
        let heal_fs = fs.clone();
        let (kind, description) = match spec {
            DiskSpec::Stall => (
                FaultKind::DiskStall,
                format!("fsfreeze {member}'s datadir ({mount})"),
            ),
            DiskSpec::Fill => (
                FaultKind::DiskFill,
                format!("fill {member}'s datadir ({mount})"),
            ),
        };
        let handle = FaultHandle::register(
            kind,
            description,
            Box::new(move || {
                // `free` thaws first; both are idempotent.
                heal_fs
                    .free()
                    .map_err(|e| FaultError::Custom(e.to_string()))?;
                Ok(Some(match spec {
                    DiskSpec::Stall => "thawed".to_string(),
                    DiskSpec::Fill => "space freed".to_string(),
                }))
            }),
        );
        let done = match spec {
            DiskSpec::Stall => fs.freeze().map(|()| None),
            DiskSpec::Fill => fs.fill().map(Some),
        };
        match done {
            Ok(filled) => {
                handle.mark_injected();
                if let Some(bytes) = filled {
                    tracing::info!(member = %member, bytes, "datadir filesystem filled");
                }
                Ok(Self { handle, fs })
            }
            Err(e) => {
                // Undo what half happened; the fault is then healed and unregistered.
                let _ = handle.heal_blocking();
                Err(FaultError::Custom(format!("{member}: {e}")))
            }
        }
    }

    /// The filesystem.
    pub fn fs(&self) -> &LoopFs {
        &self.fs
    }
}

guard_methods!(DiskFault);
