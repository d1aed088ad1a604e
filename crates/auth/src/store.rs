//! The durable user store: `<data-dir>/security/users.json`, holding per
//! user and SCRAM mechanism the salt, iterations, StoredKey and ServerKey
//! (base64). No password, not even PLAIN's, is ever written: PLAIN checks
//! the password against the SCRAM credential.
//!
//! Every change rewrites the file: temp file, fsync, rename, directory
//! fsync, so a crash leaves the old or the new store, never a mix. The
//! in-memory copy changes only after the file did. An advisory lock
//! (`users.lock`) keeps a running broker and `ferry user` from both
//! writing: the offline commands are for a stopped broker, as Kafka's
//! `kafka-storage.sh format --add-scram` is.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::credential::ScramCredential;
use crate::mechanism::{ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};

/// Most users a store holds (each login looks one up; the file is
/// rewritten on every change, so it must stay small).
pub const MAX_USERS: usize = 10_000;
/// Longest user name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest salt accepted from a client, in bytes.
pub const MAX_SALT_BYTES: usize = 1024;
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the user name must not be empty")]
    EmptyName,
    #[error("the user name is {0} bytes; at most {MAX_NAME_BYTES}")]
    NameTooLong(usize),
    #[error("the store holds {MAX_USERS} users, the most it may")]
    TooManyUsers,
    #[error("iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {0}")]
    Iterations(i64),
    #[error("the salt must be 1 to {MAX_SALT_BYTES} bytes, got {0}")]
    Salt(usize),
    #[error("the salted password must not be empty")]
    EmptySaltedPassword,
    #[error("user `{user}` has no {mechanism} credential")]
    NotFound { user: String, mechanism: ScramMechanism },
    #[error("{path} is locked by another process (a running broker?); `ferry user` changes the store of a stopped broker only")]
    Locked { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid user store: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// One change asked of the store.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert { user: String, mechanism: ScramMechanism, credential: ScramCredential },
    Delete { user: String, mechanism: ScramMechanism },
}

type Users = BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>;

/// The users, in memory and on disk. Lookups take a read lock; changes
/// are serialized and written through before they are visible.
#[derive(Debug)]
pub struct UserStore {
    path: PathBuf,
    users: RwLock<Users>,
    /// Serializes writers (held across the file write).
    writing: Mutex<()>,
    _lock: File,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    users: BTreeMap<String, BTreeMap<String, StoredCredential>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredCredential {
    salt: String,
    iterations: u32,
    stored_key: String,
    server_key: String,
}

impl UserStore {
    /// Opens (or starts empty) the store under `data_dir/security`, taking its lock.
    pub fn open(data_dir: &Path) -> Result<UserStore, StoreError> {
        let dir = security_dir(data_dir)?;
        let lock = take_lock(&dir.join("users.lock"))?;
        let path = dir.join("users.json");
        let users = match read_if_exists(&path)? {
            Some(bytes) => decode(&path, &bytes)?,
            None => Users::new(),
        };
        Ok(UserStore { path, users: RwLock::new(users), writing: Mutex::new(()), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.users.read().get(user).and_then(|m| m.get(&mechanism)).cloned()
    }

    /// A user's mechanisms and iterations, or None for an unknown user.
    pub fn describe(&self, user: &str) -> Option<Vec<(ScramMechanism, u32)>> {
        self.users.read().get(user).map(|m| m.iter().map(|(k, c)| (*k, c.iterations)).collect())
    }

    /// Every user with its mechanisms and iterations, sorted by name.
    pub fn list(&self) -> Vec<(String, Vec<(ScramMechanism, u32)>)> {
        self.users.read().iter().map(|(u, m)| (u.clone(), m.iter().map(|(k, c)| (*k, c.iterations)).collect())).collect()
    }

    /// Applies the changes in order, each checked against the ones before
    /// it; one file write for all that were valid. The outer error is a
    /// failed write, after which nothing changed.
    pub fn apply(&self, changes: Vec<Change>) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let _writer = self.writing.lock();
        let mut next = self.users.read().clone();
        let outcomes: Vec<Result<(), StoreError>> = changes.into_iter().map(|c| apply_one(&mut next, c)).collect();
        if outcomes.iter().any(Result::is_ok) {
            write_atomically(&self.path, &encode(&next)?)?;
            *self.users.write() = next;
        }
        Ok(outcomes)
    }
}

impl UserStore {
    /// The store as its file holds it (what a cluster replicates).
    pub fn export(&self) -> Result<String, StoreError> {
        let bytes = encode(&self.users.read())?;
        String::from_utf8(bytes).map_err(|e| StoreError::Corrupt { path: self.path.clone(), reason: e.to_string() })
    }

    /// Replaces every user with what `content` (an exported store) holds,
    /// written through before it is visible. Empty content is no users.
    pub fn import(&self, content: &str) -> Result<(), StoreError> {
        let _writer = self.writing.lock();
        let users = if content.trim().is_empty() { Users::new() } else { decode(&self.path, content.as_bytes())? };
        write_atomically(&self.path, &encode(&users)?)?;
        *self.users.write() = users;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.users.read().is_empty()
    }
}

/// The checks Kafka makes on an upsertion, plus Ferry's size bounds.
pub fn check_upsert(user: &str, iterations: i64, salt: &[u8], salted_password: &[u8]) -> Result<(), StoreError> {
    check_name(user)?;
    if !(i64::from(MIN_ITERATIONS)..=i64::from(MAX_ITERATIONS)).contains(&iterations) {
        return Err(StoreError::Iterations(iterations));
    }
    if salt.is_empty() || salt.len() > MAX_SALT_BYTES {
        return Err(StoreError::Salt(salt.len()));
    }
    if salted_password.is_empty() {
        return Err(StoreError::EmptySaltedPassword);
    }
    Ok(())
}

fn check_name(user: &str) -> Result<(), StoreError> {
    match user.len() {
        0 => Err(StoreError::EmptyName),
        n if n > MAX_NAME_BYTES => Err(StoreError::NameTooLong(n)),
        _ => Ok(()),
    }
}

fn apply_one(users: &mut Users, change: Change) -> Result<(), StoreError> {
    match change {
        Change::Upsert { user, mechanism, credential } => {
            check_name(&user)?;
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&credential.iterations) {
                return Err(StoreError::Iterations(i64::from(credential.iterations)));
            }
            if !users.contains_key(&user) && users.len() >= MAX_USERS {
                return Err(StoreError::TooManyUsers);
            }
            users.entry(user).or_default().insert(mechanism, credential);
            Ok(())
        }
        Change::Delete { user, mechanism } => {
            let creds = users.get_mut(&user);
            if creds.as_ref().is_none_or(|c| !c.contains_key(&mechanism)) {
                return Err(StoreError::NotFound { user, mechanism });
            }
            if let Some(creds) = creds {
                creds.remove(&mechanism);
                if creds.is_empty() {
                    users.remove(&user);
                }
            }
            Ok(())
        }
    }
}

fn encode(users: &Users) -> Result<Vec<u8>, StoreError> {
    let users = users
        .iter()
        .map(|(name, creds)| {
            let creds = creds
                .iter()
                .map(|(m, c)| {
                    let stored = StoredCredential {
                        salt: B64.encode(&c.salt),
                        iterations: c.iterations,
                        stored_key: B64.encode(&c.stored_key),
                        server_key: B64.encode(&c.server_key),
                    };
                    (m.name().to_string(), stored)
                })
                .collect();
            (name.clone(), creds)
        })
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&FileFormat { version: FORMAT_VERSION, users })
        .map_err(|e| StoreError::Corrupt { path: PathBuf::new(), reason: e.to_string() })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Users, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_path_buf(), reason };
    let file: FileFormat = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.version != FORMAT_VERSION {
        return Err(corrupt(format!("version {} (this ferry reads {FORMAT_VERSION})", file.version)));
    }
    let mut users = Users::new();
    for (name, creds) in file.users {
        let mut out = BTreeMap::new();
        for (mechanism, c) in creds {
            let m: ScramMechanism = mechanism.parse().map_err(|e| corrupt(format!("user `{name}`: {e}")))?;
            let b64 = |s: &str| B64.decode(s).map_err(|e| corrupt(format!("user `{name}` {m}: {e}")));
            let cred = ScramCredential { salt: b64(&c.salt)?, iterations: c.iterations, stored_key: b64(&c.stored_key)?, server_key: b64(&c.server_key)? };
            if cred.stored_key.len() != m.hash_len() || cred.server_key.len() != m.hash_len() {
                return Err(corrupt(format!("user `{name}` {m}: keys of the wrong length")));
            }
            out.insert(m, cred);
        }
        users.insert(name, out);
    }
    Ok(users)
}

fn take_lock(path: &Path) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
    // SAFETY: flock on a file descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            return Err(StoreError::Locked { path: path.to_path_buf() });
        }
        return Err(StoreError::Io { path: path.to_path_buf(), source: err });
    }
    Ok(file)
}

/// `data_dir/security`, where every store keeps its file; made (mode 0700)
/// when missing.
pub(crate) fn security_dir(data_dir: &Path) -> Result<std::path::PathBuf, StoreError> {
    let dir = data_dir.join("security");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
    Ok(dir)
}

/// A store file's bytes; None when it does not exist yet (a new store).
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io { path: path.to_path_buf(), source }),
    }
}

/// temp file (mode 0600) → fsync → rename → directory fsync.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("json.tmp");
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(user: &str, m: ScramMechanism, password: &str) -> Change {
        let credential = ScramCredential::generate(m, password.as_bytes(), 4096).expect("random");
        Change::Upsert { user: user.into(), mechanism: m, credential }
    }

    #[test]
    fn changes_survive_a_reopen_and_no_password_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = UserStore::open(dir.path()).expect("open");
        let out = store
            .apply(vec![
                upsert("alice", ScramMechanism::Sha512, "alice-secret"),
                upsert("bob", ScramMechanism::Sha256, "bob-secret"),
                Change::Delete { user: "carol".into(), mechanism: ScramMechanism::Sha256 },
            ])
            .expect("written");
        assert!(out[0].is_ok() && out[1].is_ok());
        assert!(matches!(out[2], Err(StoreError::NotFound { .. })));
        drop(store);
        let text = std::fs::read_to_string(dir.path().join("security/users.json")).expect("file");
        assert!(!text.contains("secret"), "{text}");
        let store = UserStore::open(dir.path()).expect("reopen");
        let cred = store.credential("alice", ScramMechanism::Sha512).expect("alice");
        assert!(cred.matches_password(ScramMechanism::Sha512, b"alice-secret"));
        assert_eq!(store.describe("bob"), Some(vec![(ScramMechanism::Sha256, 4096)]));
        store.apply(vec![Change::Delete { user: "bob".into(), mechanism: ScramMechanism::Sha256 }]).expect("written");
        assert_eq!(store.list().len(), 1, "a user with no credential left is gone");
    }

    #[test]
    fn bounds_are_checked() {
        assert!(matches!(check_upsert("u", 4095, b"s", b"p"), Err(StoreError::Iterations(4095))));
        assert!(matches!(check_upsert("u", 16385, b"s", b"p"), Err(StoreError::Iterations(_))));
        assert!(matches!(check_upsert("", 4096, b"s", b"p"), Err(StoreError::EmptyName)));
        assert!(matches!(check_upsert(&"x".repeat(257), 4096, b"s", b"p"), Err(StoreError::NameTooLong(257))));
        assert!(matches!(check_upsert("u", 4096, b"", b"p"), Err(StoreError::Salt(0))));
        assert!(matches!(check_upsert("u", 4096, b"s", b""), Err(StoreError::EmptySaltedPassword)));
        assert!(check_upsert("u", 8192, b"s", b"p").is_ok());
    }

    #[test]
    fn a_second_opener_is_refused_and_garbage_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = UserStore::open(dir.path()).expect("open");
        assert!(matches!(UserStore::open(dir.path()), Err(StoreError::Locked { .. })));
        drop(first);
        std::fs::write(dir.path().join("security/users.json"), "{\"version\":1,\"users\":{\"a\":{\"MD5\":{}}}}").expect("write");
        assert!(matches!(UserStore::open(dir.path()), Err(StoreError::Corrupt { .. })));
    }
}
