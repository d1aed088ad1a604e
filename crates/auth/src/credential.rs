//! A SCRAM credential (RFC 5802 §3): what the server keeps instead of a
//! password. The arithmetic is rsasl's (`mechanisms::scram::tools`); this
//! file only chooses the hash and the salt.

use rsasl::mechanisms::scram::tools;
use sha2::digest::core_api::BlockSizeUser;
use sha2::digest::{Digest, FixedOutputReset};
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::mechanism::ScramMechanism;

/// Bytes of salt Ferry draws for a credential it derives itself (Kafka's
/// tools draw their own and send them in AlterUserScramCredentials).
pub const SALT_LEN: usize = 32;

/// Salt, iterations, StoredKey = H(HMAC(SaltedPassword, "Client Key")) and
/// ServerKey = HMAC(SaltedPassword, "Server Key"). Enough to verify a
/// client's proof and sign the server's answer, not to log in as the user.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    /// Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

fn salted_password<D>(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8>
where
    D: Digest + BlockSizeUser + Clone + Sync,
{
    let mut out = Default::default();
    tools::hash_password::<D>(password, iterations, salt, &mut out);
    out.to_vec()
}

/// (StoredKey, ServerKey) from SaltedPassword.
fn keys<D>(salted: &[u8]) -> (Vec<u8>, Vec<u8>)
where
    D: Digest + BlockSizeUser + FixedOutputReset,
{
    let (client_key, server_key) = tools::derive_keys::<D>(salted);
    (D::digest(client_key).to_vec(), server_key.to_vec())
}

impl ScramCredential {
    /// From SaltedPassword = Hi(password, salt, i), which is what
    /// AlterUserScramCredentials carries (the client derives it).
    pub fn from_salted_password(mechanism: ScramMechanism, salt: &[u8], iterations: u32, salted: &[u8]) -> ScramCredential {
        let (stored_key, server_key) = match mechanism {
            ScramMechanism::Sha256 => keys::<Sha256>(salted),
            ScramMechanism::Sha512 => keys::<Sha512>(salted),
        };
        ScramCredential { salt: salt.to_vec(), iterations, stored_key, server_key }
    }

    /// Derives the credential of a password with a given salt.
    pub fn from_password(mechanism: ScramMechanism, password: &[u8], salt: &[u8], iterations: u32) -> ScramCredential {
        let salted = salted(mechanism, password, salt, iterations);
        ScramCredential::from_salted_password(mechanism, salt, iterations, &salted)
    }

    /// Derives the credential of a password with a fresh random salt.
    pub fn generate(mechanism: ScramMechanism, password: &[u8], iterations: u32) -> Result<ScramCredential, getrandom::Error> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::getrandom(&mut salt)?;
        Ok(ScramCredential::from_password(mechanism, password, &salt, iterations))
    }

    /// Whether `password` is the one this credential was derived from
    /// (SASL/PLAIN). Costs one PBKDF2 of `iterations` rounds; the keys are
    /// compared in constant time.
    pub fn matches_password(&self, mechanism: ScramMechanism, password: &[u8]) -> bool {
        let candidate = ScramCredential::from_password(mechanism, password, &self.salt, self.iterations);
        bool::from(candidate.stored_key.ct_eq(&self.stored_key)) & bool::from(candidate.server_key.ct_eq(&self.server_key))
    }
}

/// SaltedPassword = Hi(password, salt, iterations) with the mechanism's hash.
pub fn salted(mechanism: ScramMechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => salted_password::<Sha256>(password, salt, iterations),
        ScramMechanism::Sha512 => salted_password::<Sha512>(password, salt, iterations),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use rsasl::mechanisms::scram::tools::compute_signatures;
    use sha2::digest::generic_array::GenericArray;

    /// RFC 7677 §3: user "user", password "pencil", the salt, nonces and
    /// iterations below give this client proof and server signature.
    #[test]
    fn rfc7677_sha256_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("b64");
        let cred = ScramCredential::from_password(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        let (client_nonce, server_nonce) = ("rOprNGfwEbeRWgbNEkqO", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let (mut client_sig, mut server_sig) = (GenericArray::default(), GenericArray::default());
        compute_signatures::<Sha256>(
            GenericArray::from_slice(&cred.stored_key),
            GenericArray::from_slice(&cred.server_key),
            "user",
            client_nonce.as_bytes(),
            server_nonce.as_bytes(),
            b"W22ZaJ0SNY7soEsUEjb6gQ==",
            b"4096",
            b"biws",
            &mut client_sig,
            &mut server_sig,
        );
        assert_eq!(B64.encode(server_sig), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // ClientProof = ClientKey XOR ClientSignature; the client key is HMAC(salted, "Client Key").
        let salted = salted(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        let (client_key, _) = tools::derive_keys::<Sha256>(&salted);
        let proof: Vec<u8> = client_key.iter().zip(client_sig.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(B64.encode(proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    }

    /// SaltedPassword for SCRAM-SHA-512 is PBKDF2-HMAC-SHA512: RFC 6070's
    /// first inputs give the widely published SHA-512 output.
    #[test]
    fn sha512_salted_password_is_pbkdf2() {
        let out = salted(ScramMechanism::Sha512, b"password", b"salt", 1);
        assert_eq!(
            out.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce"
        );
    }

    #[test]
    fn a_password_matches_only_its_own_credential() {
        for m in ScramMechanism::ALL {
            let cred = ScramCredential::generate(m, b"s3cret", 4096).expect("random");
            assert_eq!(cred.stored_key.len(), m.hash_len());
            assert!(cred.matches_password(m, b"s3cret"));
            assert!(!cred.matches_password(m, b"s3cret "));
            let other = ScramCredential::generate(m, b"s3cret", 4096).expect("random");
            assert_ne!(cred.stored_key, other.stored_key, "fresh salt each time");
        }
    }
}
