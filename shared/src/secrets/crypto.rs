//! Encryption at rest: AES-256-GCM with a key id stored beside each ciphertext,
//! so keys can be rotated while old rows stay readable.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "the encryption key must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`); {0}"
    )]
    BadKey(String),
    #[error("no key with id `{0}` is configured; add the key that sealed this value (TRIBUTARY_ENCRYPTION_OLD_KEYS) before rotating it away")]
    UnknownKey(String),
    #[error("a sealed value is corrupt or was sealed with another key")]
    Corrupt,
}

/// Seals and opens secrets. Holds the current key and any older ones still needed to read.
#[derive(Clone)]
pub struct Cipher {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cipher(current key id {})", self.current)
    }
}

/// A public, stable name for a key: the first 8 bytes of its SHA-256, in hex.
fn key_id(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

fn decode_key(b64: &str) -> Result<Vec<u8>, CryptoError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| CryptoError::BadKey(format!("not base64: {e}")))?;
    if bytes.len() != 32 {
        return Err(CryptoError::BadKey(format!(
            "it decodes to {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

impl Cipher {
    /// From the current key and older ones (all base64), as configuration gives them.
    pub fn from_base64(current: &str, older: &[String]) -> Result<Self, CryptoError> {
        let mut keys = HashMap::new();
        let mut add = |b64: &str| -> Result<String, CryptoError> {
            let bytes = decode_key(b64)?;
            let id = key_id(&bytes);
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|e| CryptoError::BadKey(e.to_string()))?;
            keys.insert(id.clone(), cipher);
            Ok(id)
        };
        let current = add(current)?;
        for k in older {
            add(k)?;
        }
        Ok(Cipher { current, keys })
    }

    /// A fresh random key, base64 (for `keygen` and embedded defaults).
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Seal with the current key: (key id, base64 of nonce || ciphertext).
    pub fn seal(&self, plaintext: &[u8]) -> (String, String) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = &self.keys[&self.current];
        let sealed = cipher
            .encrypt(&Nonce::from(nonce), plaintext)
            .expect("AES-GCM encryption does not fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        (
            self.current.clone(),
            base64::engine::general_purpose::STANDARD.encode(out),
        )
    }

    pub fn open(&self, key_id: &str, sealed: &str) -> Result<Vec<u8>, CryptoError> {
        let cipher = self
            .keys
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_string()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| CryptoError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, ct) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Corrupt)?;
        cipher
            .decrypt(&Nonce::from(nonce), ct)
            .map_err(|_| CryptoError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_keeps_reading_old_keys() {
        let old = Cipher::generate_key();
        let new = Cipher::generate_key();
        let before = Cipher::from_base64(&old, &[]).unwrap();
        let (id, sealed) = before.seal(b"refresh-token-xyz");
        assert!(!sealed.contains("refresh-token-xyz"));
        let after = Cipher::from_base64(&new, std::slice::from_ref(&old)).unwrap();
        assert_eq!(after.open(&id, &sealed).unwrap(), b"refresh-token-xyz");
        assert_ne!(after.current_key_id(), id);
        let only_new = Cipher::from_base64(&new, &[]).unwrap();
        assert!(matches!(
            only_new.open(&id, &sealed),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampering_is_detected_and_bad_keys_explained() {
        let c = Cipher::from_base64(&Cipher::generate_key(), &[]).unwrap();
        let (id, sealed) = c.seal(b"x");
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(matches!(c.open(&id, &tampered), Err(CryptoError::Corrupt)));
        assert!(Cipher::from_base64("c2hvcnQ=", &[])
            .unwrap_err()
            .to_string()
            .contains("decodes to 5 bytes"));
    }
}
