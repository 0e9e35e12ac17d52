//! Local `mariadbd` replication sets on loopback, for the demo, the tests and the DR tests.
//!
//! A sandbox lives in one directory, `ROOT/NAME`, with a manifest (`sandbox.json`), one
//! folder per member and the credentials files (mode 0600). Servers run detached from the
//! process that started them, so later commands find a sandbox again from its directory.

mod binaries;
pub mod haproxy;
pub mod loopfs;
mod manifest;
mod process;
mod sandbox;
pub mod testing;
pub mod tls;

pub use binaries::{locate, locate_in_path, Binaries};
pub use manifest::{Manifest, Member, Role};
pub use sandbox::{
    default_root, CredentialSet, MemberStatus, Sandbox, SandboxError, Started, Tuning, UpOptions,
    UpOutcome, HEARTBEAT_PERIOD,
};
