//! The cluster secret: brokers prove they know it before their messages
//! are taken, so a process that can reach `--cluster-listen` cannot join
//! the cluster or feed a replica. The accepting broker sends a fresh random
//! nonce; the caller answers in its hello with HMAC-SHA-256 over the nonce,
//! its node id and its address, keyed by the secret. The secret never
//! crosses the wire and an answer is good for one connection only. It
//! authenticates who connects, not what follows: a network that can be
//! tapped or altered needs TLS besides.

use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::{NONCE_BYTES, PROOF_BYTES};

/// A shorter secret is refused: it could be guessed.
pub const MIN_SECRET_BYTES: usize = 16;
/// A longer file is not a secret (a path given by mistake, say).
const MAX_SECRET_BYTES: usize = 4096;

/// What the proof is computed over besides the nonce, so a proof made for
/// something else never passes for a hello.
const PROOF_CONTEXT: &[u8] = b"ferry cluster hello v1";

#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    pub fn new(bytes: &[u8]) -> Result<ClusterSecret, String> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!("the cluster secret has {} bytes; use at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)", bytes.len()));
        }
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(format!("the cluster secret has {} bytes; at most {MAX_SECRET_BYTES} are taken", bytes.len()));
        }
        Ok(ClusterSecret(Arc::from(bytes)))
    }

    /// The secret in `path`, without a trailing newline.
    pub fn from_file(path: &Path) -> Result<ClusterSecret, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read the cluster secret file {}: {e}", path.display()))?;
        let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
        Self::new(&bytes[..end]).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn mac(&self, nonce: &[u8; NONCE_BYTES], node_id: u64, addr: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(PROOF_CONTEXT);
        mac.update(nonce);
        mac.update(&node_id.to_be_bytes());
        mac.update(addr.as_bytes());
        mac
    }

    pub fn prove(&self, nonce: &[u8; NONCE_BYTES], node_id: u64, addr: &str) -> Vec<u8> {
        let proof = self.mac(nonce, node_id, addr).finalize().into_bytes().to_vec();
        debug_assert_eq!(proof.len(), PROOF_BYTES);
        proof
    }

    /// Whether `proof` answers `nonce` for this caller (in constant time).
    pub fn verify(&self, nonce: &[u8; NONCE_BYTES], node_id: u64, addr: &str, proof: &[u8]) -> bool {
        self.mac(nonce, node_id, addr).verify_slice(proof).is_ok()
    }
}

/// A fresh nonce from the operating system's random source.
pub fn nonce() -> std::io::Result<[u8; NONCE_BYTES]> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut n).map_err(std::io::Error::other)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_for_its_nonce_caller_and_secret_only() {
        let secret = ClusterSecret::new(b"0123456789abcdef0123").unwrap();
        let other = ClusterSecret::new(b"0123456789abcdef0124").unwrap();
        let (n1, n2) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(n1, n2);
        let proof = secret.prove(&n1, 4, "10.0.0.4:9195");
        assert_eq!(proof.len(), PROOF_BYTES);
        assert!(secret.verify(&n1, 4, "10.0.0.4:9195", &proof));
        assert!(!secret.verify(&n2, 4, "10.0.0.4:9195", &proof), "another nonce");
        assert!(!secret.verify(&n1, 5, "10.0.0.4:9195", &proof), "another node id");
        assert!(!secret.verify(&n1, 4, "10.0.0.5:9195", &proof), "another address");
        assert!(!other.verify(&n1, 4, "10.0.0.4:9195", &proof), "another secret");
        assert!(!secret.verify(&n1, 4, "10.0.0.4:9195", &[]), "no proof");
    }

    #[test]
    fn short_secrets_are_refused_and_a_file_loses_its_newline() {
        assert!(ClusterSecret::new(b"short").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let from_file = ClusterSecret::from_file(&path).unwrap();
        let n = nonce().unwrap();
        assert!(ClusterSecret::new(b"0123456789abcdef0123").unwrap().verify(&n, 1, "a", &from_file.prove(&n, 1, "a")));
        assert!(ClusterSecret::from_file(&dir.path().join("missing")).unwrap_err().contains("cannot read"));
    }
}
