//! The small state files beside a partition group's hard state are
//! replaced whole: written beside, fsynced, renamed over, directory
//! fsynced, so a crash leaves the old file or the new one.

use std::fs;
use std::io::Write;
use std::path::Path;

pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot save {}: {e}", path.display());
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    fs::File::open(path.parent().unwrap_or(Path::new("."))).and_then(|d| d.sync_all()).map_err(io)
}

/// The file's bytes; None when there is no file.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Removes the file; one already gone is fine.
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}
