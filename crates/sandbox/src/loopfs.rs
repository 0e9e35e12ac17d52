//! `LoopFs`: a member's datadir on its own loop-mounted ext4 filesystem, which the disk-fault
//! tests and DR tests freeze (`fsfreeze`) and fill (`fallocate`), and a guard that always thaws
//! and frees it.
//!
//! The work is done by the system's tools through `std::process::Command`: `truncate`,
//! `mkfs.ext4` (e2fsprogs), `losetup` and `mount`/`umount` (Debian package `mount`),
//! `fsfreeze` and `fallocate` (util-linux), and `stat -f` (coreutils). No crate makes loop
//! devices or freezes filesystems, and these are the tools an operator would use.
//!
//! Writes to a frozen filesystem block in the kernel: the writer cannot be killed, not even by
//! SIGKILL, until the thaw. So a frozen filesystem must always be thawed. [`LoopFs`] thaws
//! and frees on drop (also when the test panics), and [`release_under`] thaws and detaches
//! whatever a crashed run left mounted under a sandbox directory. Thaw before you kill a
//! server, and before you remove files on the filesystem: both block while it is frozen.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::{Sandbox, SandboxError};

/// The default size of a member's filesystem: room for a sandbox datadir and the binlogs of
/// a DR test's load, small enough to fill at once.
pub const DEFAULT_SIZE: u64 = 256 * 1024 * 1024;

/// The image file's name in the member's directory.
pub const IMAGE_FILE: &str = "data.img";

/// The name of the file [`LoopFs::fill`] allocates, at the filesystem's root (the datadir):
/// a plain file there is no database to MariaDB.
const FILL_PREFIX: &str = ".dbfleet-fill";

/// Why a loop filesystem could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum LoopFsError {
    /// Loop devices, `mount` and `fsfreeze` need root.
    #[error(
        "loop-mounted filesystems need root (this process runs as uid {uid}): run the \
         disk-fault tests as root"
    )]
    NotRoot {
        /// The effective uid.
        uid: u32,
    },
    /// A tool is not installed.
    #[error("{program} not found in PATH or /usr/sbin: install the Debian package {package}")]
    MissingProgram {
        /// The program looked for.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// The kernel gives no loop device (a container without `/dev/loop-control`, or all
    /// devices taken).
    #[error(
        "no free loop device ({detail}): a container needs --privileged or the host's \
         /dev/loop-control and /dev/loop* devices"
    )]
    NoLoopDevice {
        /// What `losetup -f` said.
        detail: String,
    },
    /// A tool failed.
    #[error("{what}: {detail}")]
    Command {
        /// What was being done.
        what: String,
        /// The exit status and the tool's stderr.
        detail: String,
    },
    /// Stopping or starting the member failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

impl LoopFsError {
    /// Whether this machine cannot make loop filesystems at all (not root, no tool, no loop
    /// device): a test reports itself skipped with this error as the reason.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::NotRoot { .. } | Self::MissingProgram { .. } | Self::NoLoopDevice { .. }
        )
    }
}

type Result<T, E = LoopFsError> = std::result::Result<T, E>;

/// The tools used, and the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("truncate", "coreutils"),
    ("stat", "coreutils"),
    ("cp", "coreutils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("losetup", "mount"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("fsfreeze", "util-linux"),
    ("fallocate", "util-linux"),
];

fn tool(name: &'static str) -> Result<PathBuf> {
    let package = TOOLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .unwrap_or("util-linux");
    crate::locate_in_path(name).ok_or(LoopFsError::MissingProgram {
        program: name,
        package,
    })
}

/// Run `program args…`; its stdout, or an error with `what`, the status and stderr.
fn run(what: &str, program: &'static str, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = Command::new(tool(program)?)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| LoopFsError::Command {
            what: what.to_string(),
            detail: format!("run {program}: {e}"),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LoopFsError::Command {
            what: what.to_string(),
            detail: format!(
                "{program} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// Whether this machine can make loop filesystems: root, the tools, and a free loop device.
/// The error says what is missing; tests report themselves skipped with it.
pub fn available() -> Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    if uid != 0 {
        return Err(LoopFsError::NotRoot { uid });
    }
    for (name, _) in TOOLS {
        tool(name)?;
    }
    match run("find a free loop device", "losetup", &[os("-f")]) {
        Ok(dev) if Path::new(dev.trim()).exists() || dev.trim().starts_with("/dev/loop") => Ok(()),
        Ok(dev) => Err(LoopFsError::NoLoopDevice {
            detail: format!("losetup -f answered {:?}", dev.trim()),
        }),
        Err(LoopFsError::Command { detail, .. }) => Err(LoopFsError::NoLoopDevice { detail }),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Default)]
struct State {
    /// Set before `fsfreeze -f` runs, cleared after a thaw: when in doubt, thaw.
    frozen: bool,
    /// The files `fill` allocated.
    fill_files: Vec<PathBuf>,
    /// Whether it is still mounted (cleared by `unmount`).
    mounted: bool,
}

/// A member's datadir on a loop-mounted ext4 filesystem of its own.
///
/// Dropping it thaws and frees the filesystem (even on a panic), then detaches it lazily:
/// the server keeps what it has open until it is killed. Drop it *before* the sandbox's
/// guard, which kills the servers (declare it after the sandbox, or keep it in a struct
/// field listed before the guard's): a frozen filesystem would keep the kill from
/// completing.
#[derive(Debug)]
pub struct LoopFs {
    member: String,
    image: PathBuf,
    mountpoint: PathBuf,
    device: String,
    /// Whether dropping it unmounts and detaches (a test's own filesystem), or only thaws
    /// and frees (one the sandbox keeps, see [`LoopFs::keep`] and [`LoopFs::find`]).
    owned: bool,
    state: Mutex<State>,
}

impl LoopFs {
    /// Move `member`'s datadir onto a new ext4 filesystem of `size` bytes: stop it if it
    /// runs, make the image (`truncate`, `mkfs.ext4`), attach it (`losetup`), mount it on the
    /// datadir, copy the data back, start the member again as [`Sandbox::start`] does, and
    /// wait until the sandbox's replicas replicate. The image is `<member>/data.img`.
    pub async fn mount_member(sb: &Sandbox, member: &str, size: u64) -> Result<Self> {
        available()?;
        let m = sb.member(member)?.clone();
        let datadir = m.datadir(sb.dir());
        let mdir = m.dir(sb.dir());
        // Canonical, as the loop device's sysfs entry names it.
        let image = mdir
            .canonicalize()
            .map_err(|e| LoopFsError::Command {
                what: format!("resolve {}", mdir.display()),
                detail: e.to_string(),
            })?
            .join(IMAGE_FILE);
        if Self::find(sb, member)?.is_some() {
            return Err(LoopFsError::Command {
                what: format!("move {member}'s datadir onto a loop filesystem"),
                detail: format!("{} is on one already", datadir.display()),
            });
        }
        let moving = mdir.join("data.pre-loopfs");
        let was_running = sb.stop(member)?;
        let moved = std::fs::rename(&datadir, &moving)
            .map_err(|e| LoopFsError::Command {
                what: format!("move {} aside", datadir.display()),
                detail: e.to_string(),
            })
            .and_then(|()| {
                Self::make(member, &image, &datadir, size, Some(moving.as_path())).inspect_err(
                    |_| {
                        // Put the datadir back as it was.
                        let _ = std::fs::remove_dir(&datadir);
                        let _ = std::fs::rename(&moving, &datadir);
                        let _ = std::fs::remove_file(&image);
                    },
                )
            });
        let fs = match moved {
            Ok(fs) => fs,
            Err(e) => {
                // The member runs again on its old datadir, as before.
                if was_running {
                    let _ = sb.start(member).await;
                }
                return Err(e);
            }
        };
        if let Err(e) = std::fs::remove_dir_all(&moving) {
            tracing::warn!(path = %moving.display(), error = %e, "old datadir not removed");
        }
        if was_running {
            sb.start(member).await?;
            sb.wait_replicating().await?;
        }
        Ok(fs)
    }

    /// A new, empty filesystem of `size` bytes mounted on `datadir` (which must not exist),
    /// its image at `image`: what `sandbox up` makes for each member before it initialises
    /// the datadir, when its tuning asks for loop datadirs.
    pub fn create(member: &str, image: &Path, datadir: &Path, size: u64) -> Result<Self> {
        available()?;
        Self::make(member, image, datadir, size, None)
    }

    /// Mount `image` on `datadir` again (after a reboot, or after the mount was lost): a
    /// sandbox member whose datadir lives on it.
    pub fn remount(member: &str, image: &Path, datadir: &Path) -> Result<Self> {
        available()?;
        Self::attach_and_mount(member, image, datadir, None, false)
    }

    /// The filesystem mounted on `member`'s datadir now, if it is a loop device's: a handle
    /// that thaws and frees on drop but leaves it mounted (the sandbox owns it; `down`
    /// unmounts it).
    pub fn find(sb: &Sandbox, member: &str) -> Result<Option<Self>> {
        let m = sb.member(member)?;
        let Ok(datadir) = m.datadir(sb.dir()).canonicalize() else {
            return Ok(None);
        };
        let Some((_, device)) = mounts()
            .into_iter()
            .rfind(|(mp, src)| *mp == datadir && src.starts_with("/dev/loop"))
        else {
            return Ok(None);
        };
        let image = backing_file(&device).unwrap_or_default();
        Ok(Some(Self {
            member: member.to_string(),
            image,
            mountpoint: datadir,
            device,
            owned: false,
            state: Mutex::new(State {
                mounted: true,
                ..State::default()
            }),
        }))
    }

    /// Keep it mounted when this handle drops (it still thaws and frees): the sandbox owns
    /// it from now on, and `down` unmounts it.
    pub fn keep(mut self) -> Self {
        self.owned = false;
        self
    }

    /// Make, attach and mount the image on `datadir`, and copy `from` into it. Undoes what
    /// it did when a step fails.
    fn make(
        member: &str,
        image: &Path,
        datadir: &Path,
        size: u64,
        from: Option<&Path>,
    ) -> Result<Self> {
        let _ = std::fs::remove_file(image);
        run(
            "make the filesystem image",
            "truncate",
            &[os("-s"), os(&size.to_string()), image.as_os_str()],
        )?;
        run(
            "make the ext4 filesystem",
            "mkfs.ext4",
            &[
                os("-q"),
                os("-F"),
                os("-b"),
                os("4096"),
                os("-m"),
                os("5"),
                image.as_os_str(),
            ],
        )?;
        Self::attach_and_mount(member, image, datadir, from, true)
    }

    /// Attach `image` to a free loop device and mount it on `datadir` (made when
    /// `create_dir`, which must not exist then), then copy `from` into it.
    fn attach_and_mount(
        member: &str,
        image: &Path,
        datadir: &Path,
        from: Option<&Path>,
        create_dir: bool,
    ) -> Result<Self> {
        let device = run(
            "attach the image to a loop device",
            "losetup",
            &[os("--find"), os("--show"), image.as_os_str()],
        )
        .map_err(|e| match e {
            LoopFsError::Command { detail, .. } => LoopFsError::NoLoopDevice { detail },
            e => e,
        })?
        .trim()
        .to_string();
        // Canonical, as /proc/self/mountinfo names it.
        let made = if create_dir {
            std::fs::create_dir(datadir)
        } else {
            std::fs::create_dir_all(datadir)
        };
        let mountpoint =
            made.and_then(|()| datadir.canonicalize())
                .map_err(|e| LoopFsError::Command {
                    what: format!("create {}", datadir.display()),
                    detail: e.to_string(),
                });
        let mountpoint = match mountpoint {
            Ok(m) => m,
            Err(e) => {
                let _ = run("detach", "losetup", &[os("-d"), os(&device)]);
                return Err(e);
            }
        };
        let fs = Self {
            member: member.to_string(),
            image: image.to_path_buf(),
            mountpoint,
            device: device.clone(),
            owned: true,
            state: Mutex::new(State::default()),
        };
        let mounted = (|| {
            run(
                "mount the filesystem on the datadir",
                "mount",
                &[os("-t"), os("ext4"), os(&device), datadir.as_os_str()],
            )?;
            fs.state.lock().unwrap_or_else(|p| p.into_inner()).mounted = true;
            // mkfs makes lost+found at the root, which MariaDB would list as a database.
            let _ = std::fs::remove_dir(datadir.join("lost+found"));
            if let Some(from) = from {
                let mut src = from.as_os_str().to_owned();
                src.push("/.");
                run(
                    "copy the datadir onto the filesystem",
                    "cp",
                    &[os("-a"), &src, datadir.as_os_str()],
                )?;
            }
            Ok(())
        })();
        match mounted {
            Ok(()) => Ok(fs),
            Err(e) => {
                fs.detach();
                Err(e)
            }
        }
    }

    /// The member whose datadir it holds.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Where it is mounted: the member's datadir.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The loop device, e.g. `/dev/loop3`.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether it is frozen now (as far as this handle knows).
    pub fn is_frozen(&self) -> bool {
        self.state().frozen
    }

    /// Freeze it (`fsfreeze -f`): every write to it blocks in the kernel until [`thaw`].
    /// Reads of what is cached still answer.
    ///
    /// [`thaw`]: LoopFs::thaw
    pub fn freeze(&self) -> Result<()> {
        self.ensure_mounted("freeze")?;
        // Marked first, and kept on an error: when in doubt, the guard thaws (a thaw of a
        // filesystem that is not frozen does nothing).
        self.state().frozen = true;
        run(
            "freeze the filesystem",
            "fsfreeze",
            &[os("-f"), self.mountpoint.as_os_str()],
        )
        .map(|_| ())
    }

    /// Thaw it (`fsfreeze -u`): blocked writes complete. A filesystem that is not frozen is
    /// left alone.
    pub fn thaw(&self) -> Result<()> {
        let mut st = self.state();
        if !st.frozen {
            return Ok(());
        }
        if self.ensure_mounted("thaw").is_err() {
            // Unmounted (lazily, by `release_under`): nothing of ours is left to thaw.
            st.frozen = false;
            return Ok(());
        }
        match run(
            "thaw the filesystem",
            "fsfreeze",
            &[os("-u"), self.mountpoint.as_os_str()],
        ) {
            Ok(_) => {
                st.frozen = false;
                Ok(())
            }
            // EINVAL: it was not frozen after all.
            Err(LoopFsError::Command { detail, .. }) if detail.contains("Invalid argument") => {
                st.frozen = false;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Fail unless our loop device is still mounted on the mount point. `fsfreeze` and
    /// `fallocate` act on whatever filesystem holds the path: after an unmount that would be
    /// the machine's own.
    fn ensure_mounted(&self, what: &str) -> Result<()> {
        let ours = mounts()
            .iter()
            .any(|(mp, src)| *mp == self.mountpoint && *src == self.device);
        if ours {
            Ok(())
        } else {
            Err(LoopFsError::Command {
                what: format!("{what} {}", self.mountpoint.display()),
                detail: format!("{} is no longer mounted there", self.device),
            })
        }
    }

    /// Free space on it in bytes, as root sees it (the reserved blocks count as free).
    pub fn free_bytes(&self) -> Result<u64> {
        let out = run(
            "read free space",
            "stat",
            &[os("-f"), os("-c"), os("%f %S"), self.mountpoint.as_os_str()],
        )?;
        let mut it = out.split_whitespace().map(|w| w.parse::<u64>());
        match (it.next(), it.next()) {
            (Some(Ok(blocks)), Some(Ok(size))) => Ok(blocks * size),
            _ => Err(LoopFsError::Command {
                what: "read free space".into(),
                detail: format!("stat -f answered {:?}", out.trim()),
            }),
        }
    }

    /// Fill it: allocate its free blocks (the 5 % reserved for root too) with `fallocate`,
    /// asking for less each time the kernel says ENOSPC, until it refuses 64 KiB. What stays
    /// free then is ext4's own reserve for metadata (2 % of the blocks at most), which no
    /// write of the server may take: its next write that needs a block fails with ENOSPC.
    /// Returns the bytes allocated. [`free`] gives them back.
    ///
    /// [`free`]: LoopFs::free
    pub fn fill(&self) -> Result<u64> {
        self.ensure_mounted("fill")?;
        const ENOUGH: u64 = 64 * 1024;
        let before = self.free_bytes()?;
        let mut want = before;
        // Bounded: each round either allocates what it asks or halves the request.
        for _ in 0..64 {
            if want < ENOUGH {
                break;
            }
            let path = {
                let mut st = self.state();
                let p = self
                    .mountpoint
                    .join(format!("{FILL_PREFIX}-{}", st.fill_files.len()));
                st.fill_files.push(p.clone());
                p
            };
            // On ENOSPC the kernel keeps what it did allocate: the file stays, and the next
            // round asks for half.
            match run(
                "fill the filesystem",
                "fallocate",
                &[os("-l"), os(&want.to_string()), path.as_os_str()],
            ) {
                Ok(_) => want = self.free_bytes()?,
                Err(_) => want = (want / 2).min(self.free_bytes()?),
            }
        }
        Ok(before.saturating_sub(self.free_bytes()?))
    }

    /// Give back what [`fill`] allocated. Thaws first: removing a file blocks while the
    /// filesystem is frozen.
    ///
    /// [`fill`]: LoopFs::fill
    pub fn free(&self) -> Result<()> {
        self.thaw()?;
        let files = std::mem::take(&mut self.state().fill_files);
        let mut first_err = None;
        for f in files {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(LoopFsError::Command {
                        what: format!("remove {}", f.display()),
                        detail: e.to_string(),
                    });
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Thaw and free, best effort, printing what failed: what the guard does on drop, and
    /// what a DR test runner calls on error and on Ctrl-C.
    pub fn release(&self) {
        if let Err(e) = self.thaw() {
            eprintln!("loopfs {}: {e}", self.mountpoint.display());
        }
        if let Err(e) = self.free() {
            eprintln!("loopfs {}: {e}", self.mountpoint.display());
        }
    }

    /// Thaw, free, stop the member, unmount and detach the loop device, and remove the
    /// image. The member's datadir is then empty: its data lived on the filesystem.
    pub fn unmount(self, sb: &Sandbox) -> Result<()> {
        self.release();
        sb.stop(&self.member)?;
        run(
            "unmount the filesystem",
            "umount",
            &[self.mountpoint.as_os_str()],
        )?;
        self.state().mounted = false;
        self.detach();
        Ok(())
    }

    /// Unmount lazily (when still mounted), detach the loop device (the kernel does it once
    /// its last user closes it, when busy) and remove the image. Best effort.
    fn detach(&self) {
        if std::mem::take(&mut self.state().mounted) {
            let _ = run(
                "unmount the filesystem",
                "umount",
                &[os("-l"), self.mountpoint.as_os_str()],
            );
        }
        // Only while it is still ours: once released, the kernel may have lent the device to
        // someone else.
        if backing_file(&self.device).as_deref() == Some(self.image.as_path()) {
            let _ = run(
                "detach the loop device",
                "losetup",
                &[os("-d"), os(&self.device)],
            );
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        self.release();
        if self.owned {
            self.detach();
        }
    }
}

/// The image file behind the loop device `device` (`/dev/loopN`), from sysfs, when attached.
fn backing_file(device: &str) -> Option<PathBuf> {
    let name = Path::new(device).file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end_matches('\n')))
}

/// Thaw every filesystem mounted under `dir` (a sandbox directory), and leave it mounted:
/// the first step of stopping a sandbox whose datadirs are on loop filesystems, since a
/// server blocked on a frozen one cannot be stopped. Returns the mount points thawed.
pub fn thaw_under(dir: &Path) -> Vec<PathBuf> {
    let found = mounted_under(dir);
    for (mp, _) in &found {
        let _ = run("thaw", "fsfreeze", &[os("-u"), mp.as_os_str()]);
    }
    found.into_iter().map(|(mp, _)| mp).collect()
}

/// Thaw every filesystem mounted under `dir` (a sandbox directory) and remove the files
/// [`LoopFs::fill`] left at its root, leaving it mounted: what a run killed with SIGKILL
/// could not heal. Returns what it did, one line each; nothing when nothing was left.
pub fn recover_under(dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    for (mp, _) in mounted_under(dir) {
        if run("thaw", "fsfreeze", &[os("-u"), mp.as_os_str()]).is_ok() {
            done.push(format!("thawed {}", mp.display()));
        }
        let Ok(entries) = std::fs::read_dir(&mp) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(FILL_PREFIX)
                && std::fs::remove_file(e.path()).is_ok()
            {
                done.push(format!("freed {}", e.path().display()));
            }
        }
    }
    done
}

fn mounted_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, String)> = mounts()
        .into_iter()
        .filter(|(mp, _)| mp.starts_with(&dir) && *mp != dir)
        .collect();
    // Deepest first.
    found.sort_by_key(|(mp, _)| std::cmp::Reverse(mp.components().count()));
    found
}

/// Thaw, unmount and detach every filesystem mounted under `dir` (a sandbox directory): what
/// a crashed or interrupted run left behind. `Sandbox::down` and the test guards call it
/// before they stop servers, which would otherwise hang on a frozen filesystem. Returns the
/// mount points released. Does nothing (and needs no root) when nothing is mounted there.
pub fn release_under(dir: &Path) -> Vec<PathBuf> {
    let found = mounted_under(dir);
    for (mp, source) in &found {
        let _ = run("thaw", "fsfreeze", &[os("-u"), mp.as_os_str()]);
        let _ = run("unmount", "umount", &[os("-l"), mp.as_os_str()]);
        if source.starts_with("/dev/loop") {
            let _ = run("detach", "losetup", &[os("-d"), os(source)]);
        }
    }
    found.into_iter().map(|(mp, _)| mp).collect()
}

/// Every mount of this process's namespace: (mount point, source), from
/// `/proc/self/mountinfo`.
fn mounts() -> Vec<(PathBuf, String)> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            // Fields: id parent major:minor root mountpoint options... - fstype source ...
            let mountpoint = unescape(l.split(' ').nth(4)?);
            let source = l.split(" - ").nth(1)?.split(' ').nth(1)?.to_string();
            Some((PathBuf::from(mountpoint), source))
        })
        .collect()
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape("/tmp/plain"), "/tmp/plain");
    }

    #[test]
    fn nothing_mounted_under_a_fresh_directory() {
        let d = tempfile::tempdir().unwrap();
        assert!(release_under(d.path()).is_empty());
    }

    #[test]
    fn unavailable_errors_are_told_apart() {
        assert!(LoopFsError::NotRoot { uid: 1000 }.is_unavailable());
        assert!(LoopFsError::NoLoopDevice { detail: "x".into() }.is_unavailable());
        assert!(!LoopFsError::Command {
            what: "x".into(),
            detail: "y".into()
        }
        .is_unavailable());
    }
}
