//! Domain types of dbfleet and the pure functions over them. This crate does no IO (it
//! reads the clock in [`clock`] only).

pub mod addr;
pub mod clock;
pub mod gtid;
pub mod metrics;
pub mod observation;
pub mod operation;

pub use addr::{AddrError, InstanceAddr};
pub use metrics::{alert_values, HeartbeatReading, InstanceMetrics, Rates, Role};
pub use observation::{
    DiskSpace, Flavor, GtidState, IoThreadState, Observation, ProbeFailure, ProbeFailureKind,
    Reachability, ReplicationStatus, SemiSyncState, ServerState, StreamProgress, WriteFailure,
    WriteProbe, DISK_FULL_BYTES, ERR_NO_SPACE, ER_DISK_FULL, MAX_HUNG_WRITES,
    SEMI_SYNC_LOSSLESS_TIMEOUT_MS, SEMI_SYNC_NEVER_FALLS_BACK_MS,
};
pub use operation::{OperationKind, UnknownOperationKind};
pub mod problem;
pub mod round;
pub mod spec;

pub use problem::{Evidence, Problem, ProblemKind, Severity};
pub use round::{ClusterRound, RoundTrigger};
pub use spec::{ClusterSpec, InstanceSpec, PromotionRule, StorageSpec, DEFAULT_STALL_CONFIRM};
pub mod analysis;
pub mod stream;
pub mod tls;

pub use stream::{SharedStreams, StreamTracker};
pub use tls::{TlsMode, TlsSettings};
