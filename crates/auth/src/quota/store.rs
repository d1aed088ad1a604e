//! The durable quota configuration: `<data-dir>/security/quotas.json`,
//! rewritten whole on every change (temp file, fsync, rename, directory
//! fsync, as the user and ACL stores), so a crash leaves the old or the
//! new configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{QuotaEntity, Values, MAX_ENTITIES};
use crate::store::{read_if_exists, security_dir, write_atomically, StoreError};

const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    entity: QuotaEntity,
    quotas: Values,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    entities: Vec<Entry>,
}

pub type Config = BTreeMap<QuotaEntity, Values>;

/// Where the quotas live on disk.
#[derive(Debug)]
pub struct QuotaStore {
    path: PathBuf,
}

impl QuotaStore {
    /// The store under `data_dir/security` and what it holds (nothing
    /// when the file does not exist yet).
    pub fn open(data_dir: &Path) -> Result<(QuotaStore, Config), StoreError> {
        let path = security_dir(data_dir)?.join("quotas.json");
        let config = match read_if_exists(&path)? {
            Some(bytes) => decode(&path, &bytes)?,
            None => Config::new(),
        };
        Ok((QuotaStore { path }, config))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn save(&self, config: &Config) -> Result<(), StoreError> {
        let entities = config.iter().map(|(entity, quotas)| Entry { entity: entity.clone(), quotas: quotas.clone() }).collect();
        let file = FileFormat { version: FORMAT_VERSION, entities };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
        bytes.push(b'\n');
        write_atomically(&self.path, &bytes)
    }
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Config, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_path_buf(), reason };
    let file: FileFormat = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.version != FORMAT_VERSION {
        return Err(corrupt(format!("version {} (this ferry reads {FORMAT_VERSION})", file.version)));
    }
    if file.entities.len() > MAX_ENTITIES {
        return Err(corrupt(format!("{} entities, more than the {MAX_ENTITIES} allowed", file.entities.len())));
    }
    let mut config = Config::new();
    for e in file.entities {
        e.entity.validate().map_err(|err| corrupt(format!("{}: {err}", e.entity.path())))?;
        for (key, value) in &e.quotas {
            key.check_value(*value).map_err(|err| corrupt(format!("{}: {err}", e.entity.path())))?;
        }
        if !e.quotas.is_empty() {
            config.insert(e.entity, e.quotas);
        }
    }
    Ok(config)
}
