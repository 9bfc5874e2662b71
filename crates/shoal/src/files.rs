//! The store directory, and how its files are opened: relative to one open
//! handle on the directory, never through a symbolic link, with explicit
//! modes.
//!
//! Who may read a store is set by its directory: its group, and its mode's
//! group and other bits. A store is created private (mode 0700) unless
//! asked otherwise (`Options::mode`, `Options::group`). Files get their
//! modes from the directory's, whatever the process's umask:
//!
//! | kind | files | mode with a 0750 directory |
//! | --- | --- | --- |
//! | data (read by readers) | arena generations, `control`, `meta`, `settings`, `journal` | 0640 |
//! | shared (written by readers) | `readers` | 0660 |
//! | private (the writer's) | `lock`, temporary files | 0600 |
//!
//! A directory that grants group read also has its set-group-id bit, so
//! files created in it take its group. Opening a store as its writer checks
//! that the directory belongs to the writer's user and that nobody else may
//! write it (otherwise anyone could plant or swap its files); names are
//! opened with `O_NOFOLLOW`, so a planted symbolic link is refused, never
//! followed.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::error::{Error, Result};

/// How a file of the store is used, which sets its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Read by readers: arena generations, `control`, `meta`, `settings`,
    /// `journal` (which holds what the arena holds).
    Data,
    /// Written by readers too: the reader table.
    Shared,
    /// The writer's alone: `lock`, the creation marker.
    Private,
}

/// How to open a file of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    Read,
    /// Read-write, an existing file; given its kind's mode if this process
    /// owns it and it has another (a mode someone loosened is tightened).
    ReadWrite(FileKind),
    /// Read-write, created (with its kind's mode) if missing.
    Create(FileKind),
    /// Read-write, created; an existing file is an error.
    CreateNew(FileKind),
}

/// An open store directory.
pub struct StoreDir {
    fd: OwnedFd,
    path: PathBuf,
    /// The directory's mode bits (0o7777).
    mode: u32,
}

impl std::fmt::Debug for StoreDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDir").field("path", &self.path).field("mode", &format_args!("{:o}", self.mode)).finish()
    }
}

/// A name of a file in the store directory, for the system calls.
fn c_name(name: &str) -> CString {
    // Names are shoal's own constants and generation numbers: no NUL.
    CString::new(name).unwrap_or_default()
}

impl StoreDir {
    /// Opens the existing directory `path` (whose own path may go through
    /// links; its entries are then opened relative to it).
    pub fn open(path: &Path) -> Result<StoreDir> {
        let canonical = std::fs::canonicalize(path).map_err(|e| io_error(path, e))?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(rustix::fs::CWD, &canonical, flags, Mode::empty())
            .map_err(|e| io_error(&canonical, e.into()))?;
        let mode = rustix::fs::fstat(&fd).map_err(|e| io_error(&canonical, e.into()))?.st_mode & 0o7777;
        Ok(StoreDir { fd, path: canonical, mode })
    }

    /// Creates the directory `path` (and missing parents) with `mode`, and
    /// `group` if given, then opens it. An existing directory is opened as
    /// it is.
    pub fn create(path: &Path, mode: u32, group: Option<u32>) -> Result<StoreDir> {
        let cannot_create = |at: &Path, e: std::io::Error| match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => Error::Access {
                path: at.to_path_buf(),
                reason: "permission denied: this user may not create the store's directory there".into(),
            },
            _ => io_error(at, e),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| cannot_create(parent, e))?;
        }
        let created = match rustix::fs::mkdir(path, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(e) => return Err(cannot_create(path, e.into())),
        };
        let mut dir = StoreDir::open(path)?;
        if created {
            if let Err(e) = dir.set_access(mode, group) {
                // Leave nothing behind: the directory is new and empty.
                let _ = std::fs::remove_dir(path);
                return Err(e);
            }
        }
        Ok(dir)
    }

    /// Gives the directory `mode` (plus the set-group-id bit when the group
    /// may read) and `group` if given.
    pub fn set_access(&mut self, mode: u32, group: Option<u32>) -> Result<()> {
        if let Some(gid) = group {
            match rustix::fs::fchown(&self.fd, None, Some(rustix::fs::Gid::from_raw(gid))) {
                Ok(()) => {}
                Err(rustix::io::Errno::PERM) => {
                    return Err(Error::Access {
                        path: self.path.clone(),
                        reason: format!("cannot give the store to group {gid}: this user is not a member of it"),
                    })
                }
                Err(e) => return Err(io_error(&self.path, e.into())),
            }
        }
        let mode = (mode & 0o777) | if mode & 0o040 != 0 { 0o2000 } else { 0 };
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode)).map_err(|e| io_error(&self.path, e.into()))?;
        self.mode = mode;
        Ok(())
    }

    /// The directory's permission bits and group.
    pub fn access(&self) -> Result<(u32, Option<u32>)> {
        let stat = rustix::fs::fstat(&self.fd).map_err(|e| io_error(&self.path, e.into()))?;
        Ok((stat.st_mode & 0o777, Some(stat.st_gid)))
    }

    /// Checks that a writer may trust the directory: it belongs to this
    /// process's user, and no one else may write to it.
    pub fn check_owner(&self) -> Result<()> {
        let stat = rustix::fs::fstat(&self.fd).map_err(|e| io_error(&self.path, e.into()))?;
        let me = rustix::process::geteuid().as_raw();
        if stat.st_uid != me {
            return Err(Error::Access {
                path: self.path.clone(),
                reason: format!(
                    "the store directory belongs to user {}, not to this writer (user {me}); open it as its owner",
                    stat.st_uid
                ),
            });
        }
        if stat.st_mode & 0o022 != 0 {
            return Err(Error::Access {
                path: self.path.clone(),
                reason: format!(
                    "the store directory is writable by other users (mode {:o}), who could plant or swap its files; \
                     remove their write permission (chmod go-w)",
                    stat.st_mode & 0o7777
                ),
            });
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of an entry, for messages.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The mode a file of `kind` gets (see the module docs).
    pub fn file_mode(&self, kind: FileKind) -> u32 {
        let read = self.mode & 0o044;
        match kind {
            FileKind::Private => 0o600,
            FileKind::Data => 0o600 | read,
            FileKind::Shared => 0o600 | read | (read >> 1),
        }
    }

    /// Opens the entry `name`, never following a symbolic link.
    pub fn open_file(&self, name: &str, how: Open) -> Result<File> {
        let (flags, kind) = match how {
            Open::Read => (OFlags::RDONLY, None),
            Open::ReadWrite(kind) => (OFlags::RDWR, Some(kind)),
            Open::Create(kind) => (OFlags::RDWR | OFlags::CREATE, Some(kind)),
            Open::CreateNew(kind) => (OFlags::RDWR | OFlags::CREATE | OFlags::EXCL, Some(kind)),
        };
        let mode = kind.map_or(0, |k| self.file_mode(k));
        let fd = rustix::fs::openat(
            &self.fd,
            c_name(name).as_c_str(),
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| io_error(&self.join(name), e.into()))?;
        if kind.is_some() {
            // The umask may have taken bits away; a file another user owns
            // keeps its mode (only its owner may change it).
            let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(&self.join(name), e.into()))?;
            if stat.st_mode & 0o777 != mode && stat.st_uid == rustix::process::geteuid().as_raw() {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| io_error(&self.join(name), e.into()))?;
            }
        }
        Ok(File::from(fd))
    }

    /// Whether the entry `name` exists (a symbolic link counts, and is
    /// refused when opened).
    pub fn exists(&self, name: &str) -> Result<bool> {
        match rustix::fs::statat(&self.fd, c_name(name).as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(io_error(&self.join(name), e.into())),
        }
    }

    /// Removes the entry `name`; a missing one is not an error.
    pub fn remove(&self, name: &str) -> Result<()> {
        match rustix::fs::unlinkat(&self.fd, c_name(name).as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io_error(&self.join(name), e.into())),
        }
    }

    /// Renames the entry `from` to `to`, replacing `to`.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        rustix::fs::renameat(&self.fd, c_name(from).as_c_str(), &self.fd, c_name(to).as_c_str())
            .map_err(|e| io_error(&self.join(from), e.into()))
    }

    /// The names of the directory's entries.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd).map_err(|e| io_error(&self.path, e.into()))?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| io_error(&self.path, e.into()))?;
            if let Ok(name) = entry.file_name().to_str() {
                if name != "." && name != ".." {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    /// Makes the directory's entries (files created, renamed or removed in
    /// it) durable.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).map_err(|e| io_error(&self.path, e.into()))
    }
}

/// An I/O error about `path`, with a symbolic link and a refused
/// permission named as such.
pub fn io_error(path: &Path, source: std::io::Error) -> Error {
    match source.raw_os_error() {
        Some(libc::ELOOP) => Error::Access {
            path: path.to_path_buf(),
            reason: "it is a symbolic link; shoal never follows links in a store directory".into(),
        },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::Access {
            path: path.to_path_buf(),
            reason: "permission denied (a store may be read by its owner, and by its group when its mode lets the \
                     group read)"
                .into(),
        },
        _ => Error::Io { file: path.to_path_buf(), source },
    }
}
