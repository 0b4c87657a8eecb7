//! `_metadata` files of checkpoints and savepoints: JSON, a newline, then `sha256:<hex>` of the
//! JSON's bytes, so that a torn or altered file is found before it is trusted.
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::storage::{Storage, StorageError};

/// Why a checked JSON file cannot be used.
pub(crate) enum Unusable {
    /// It is missing, torn or altered.
    Torn(String),
    /// The storage failed: it cannot be read now.
    Storage(StorageError),
}

impl From<StorageError> for Unusable {
    fn from(e: StorageError) -> Self {
        if e.is_not_found() { Unusable::Torn(e.to_string()) } else { Unusable::Storage(e) }
    }
}

impl From<String> for Unusable {
    fn from(cause: String) -> Self {
        Unusable::Torn(cause)
    }
}

impl From<Unusable> for String {
    fn from(e: Unusable) -> Self {
        match e {
            Unusable::Torn(cause) => cause,
            Unusable::Storage(e) => e.to_string(),
        }
    }
}

/// Writes `value` as pretty JSON with its checksum line.
pub(crate) fn put(storage: &Storage, path: &str, value: &impl Serialize) -> Result<(), String> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    let checksum = hex::encode(Sha256::digest(&bytes));
    bytes.extend_from_slice(format!("\nsha256:{checksum}\n").as_bytes());
    storage.put(path, bytes).map_err(|e| e.to_string())
}

/// Reads the JSON of a file written by [`put`], after checking it against its checksum line.
pub(crate) fn get(storage: &Storage, path: &str) -> Result<String, Unusable> {
    let bytes = storage.get(path)?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8"))?;
    let (json, checksum) =
        text.trim_end().rsplit_once("\nsha256:").ok_or_else(|| format!("{path} has no sha256 line"))?;
    if hex::encode(Sha256::digest(json.as_bytes())) != checksum {
        return Err(format!("{path} does not match its checksum (torn or changed)").into());
    }
    Ok(json.to_string())
}
