//! The storage seam: every byte the log reads or writes goes through these two
//! traits, so tests (and the `FERRY_FAULT_INJECT` hook) can fail writes and
//! fsyncs on purpose without touching the log's logic.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One open file. Positional I/O only: the log tracks its own write position.
pub trait StorageFile: Send + Sync + std::fmt::Debug {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Data (and the size) reach stable storage when this returns Ok.
    fn sync(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn path(&self) -> &Path;

    /// Reads exactly `buf.len()` bytes or fails with UnexpectedEof.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, pos)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
            }
            buf = &mut buf[n..];
            pos += n as u64;
        }
        Ok(())
    }
}

/// The file system as the log sees it.
pub trait Storage: Send + Sync + std::fmt::Debug {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes a directory's entries (created or removed files) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile {
    file: File,
    path: PathBuf,
}

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.file.write_all_at(buf, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Storage for FsStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        Ok(Arc::new(FsFile { file, path: path.to_path_buf() }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path)? {
            out.push(entry?.path());
        }
        out.sort();
        Ok(out)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

/// What a fault rule breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `write` fails with EIO once `after` writes succeeded.
    WriteError,
    /// `sync` fails with EIO once `after` syncs succeeded.
    FsyncError,
    /// `write` fails with ENOSPC once `after` bytes were written.
    DiskFull,
}

#[derive(Debug)]
pub struct FaultRule {
    pub kind: FaultKind,
    /// Only files whose path contains this substring are affected.
    pub path_contains: String,
    pub after: u64,
    count: AtomicU64,
}

/// A set of fault rules, parsed from `kind:path-substring:after[,...]`,
/// e.g. `fsync-error:faulty-0:10,disk-full:big-0:1048576`.
#[derive(Debug, Default)]
pub struct FaultPlan {
    pub rules: Vec<FaultRule>,
}

impl FaultPlan {
    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let mut rules = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.splitn(3, ':').collect();
            if fields.len() != 3 {
                return Err(format!("fault rule `{part}` is not kind:path-substring:after"));
            }
            let kind = match fields[0] {
                "write-error" => FaultKind::WriteError,
                "fsync-error" => FaultKind::FsyncError,
                "disk-full" => FaultKind::DiskFull,
                other => return Err(format!("unknown fault kind `{other}` (write-error, fsync-error, disk-full)")),
            };
            let after = fields[2].parse::<u64>().map_err(|_| format!("fault rule `{part}`: `{}` is not a count", fields[2]))?;
            rules.push(FaultRule { kind, path_contains: fields[1].to_string(), after, count: AtomicU64::new(0) });
        }
        Ok(FaultPlan { rules })
    }
}

/// Wraps another storage and breaks it according to a [`FaultPlan`].
#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    plan: Arc<FaultPlan>,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>, plan: FaultPlan) -> Self {
        FaultyStorage { inner, plan: Arc::new(plan) }
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    plan: Arc<FaultPlan>,
}

impl FaultyFile {
    fn rules(&self, kind: FaultKind) -> impl Iterator<Item = &FaultRule> {
        let path = self.inner.path().to_string_lossy().into_owned();
        self.plan.rules.iter().filter(move |r| r.kind == kind && path.contains(&r.path_contains))
    }
}

impl StorageFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        for rule in self.rules(FaultKind::WriteError) {
            if rule.count.fetch_add(1, Ordering::SeqCst) >= rule.after {
                return Err(io::Error::other("injected write error"));
            }
        }
        for rule in self.rules(FaultKind::DiskFull) {
            let written = rule.count.fetch_add(buf.len() as u64, Ordering::SeqCst);
            if written + buf.len() as u64 > rule.after {
                // A full disk accepts part of a write: model the worst case.
                let room = rule.after.saturating_sub(written) as usize;
                if room > 0 {
                    self.inner.write_all_at(&buf[..room.min(buf.len())], pos)?;
                }
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
        }
        self.inner.write_all_at(buf, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        for rule in self.rules(FaultKind::FsyncError) {
            if rule.count.fetch_add(1, Ordering::SeqCst) >= rule.after {
                return Err(io::Error::other("injected fsync error"));
            }
        }
        self.inner.sync()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

impl Storage for FaultyStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.inner.open(path, create)?;
        Ok(Arc::new(FaultyFile { inner, plan: self.plan.clone() }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
}
