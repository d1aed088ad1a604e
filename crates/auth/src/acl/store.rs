//! The durable ACL store: `<data-dir>/security/acls.json`, rewritten
//! whole on every change (temp file, fsync, rename, directory fsync, as
//! the user store), so a crash leaves the old or the new set.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{AclBinding, MAX_ACLS};
use crate::store::{read_if_exists, security_dir, write_atomically, StoreError};

const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    acls: Vec<AclBinding>,
}

/// Where the ACLs live on disk.
#[derive(Debug)]
pub struct AclStore {
    path: PathBuf,
}

impl AclStore {
    /// The store under `data_dir/security` and the ACLs it holds (none
    /// when the file does not exist yet).
    pub fn open(data_dir: &Path) -> Result<(AclStore, BTreeSet<AclBinding>), StoreError> {
        let path = security_dir(data_dir)?.join("acls.json");
        let acls = match read_if_exists(&path)? {
            Some(bytes) => decode(&path, &bytes)?,
            None => BTreeSet::new(),
        };
        Ok((AclStore { path }, acls))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn save(&self, acls: &BTreeSet<AclBinding>) -> Result<(), StoreError> {
        write_atomically(&self.path, &encode(&self.path, acls)?)
    }
}

/// The file's bytes for `acls`.
pub(super) fn encode(path: &Path, acls: &BTreeSet<AclBinding>) -> Result<Vec<u8>, StoreError> {
    let file = FileFormat { version: FORMAT_VERSION, acls: acls.iter().cloned().collect() };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })?;
    bytes.push(b'\n');
    Ok(bytes)
}

pub(super) fn decode(path: &Path, bytes: &[u8]) -> Result<BTreeSet<AclBinding>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_path_buf(), reason };
    let file: FileFormat = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.version != FORMAT_VERSION {
        return Err(corrupt(format!("version {} (this ferry reads {FORMAT_VERSION})", file.version)));
    }
    if file.acls.len() > MAX_ACLS {
        return Err(corrupt(format!("{} ACLs, more than the {MAX_ACLS} allowed", file.acls.len())));
    }
    for acl in &file.acls {
        acl.validate().map_err(|e| corrupt(format!("{acl}: {e}")))?;
    }
    Ok(file.acls.into_iter().collect())
}
