//! Credentials toward a model's meter. Each model's meter gets two tokens of its own, derived
//! from the install's root keys: the proxy token (only the gateway may send it requests and
//! attribution headers) and the usage token (only billing may read and ack its records). A
//! meter knows only its own tokens, so one compromised pod cannot speak for another model.

use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::Sha256;

/// What a meter token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterCredential {
    /// Sending requests through the meter (the gateway).
    Proxy,
    /// Reading and acking usage records (billing).
    Usage,
}

impl MeterCredential {
    fn label(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Usage => "usage",
        }
    }
}

/// Shortest root key accepted, in bytes (a 128-bit secret).
pub const MIN_ROOT_KEY_BYTES: usize = 16;

/// A root key read from its Secret file; the token of each model derives from it.
#[derive(Clone)]
pub struct MeterRootKey {
    credential: MeterCredential,
    key: Vec<u8>,
}

impl std::fmt::Debug for MeterRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MeterRootKey({:?}, redacted)", self.credential)
    }
}

impl MeterRootKey {
    /// A root key for `credential` from the bytes of its file (surrounding whitespace ignored).
    pub fn new(credential: MeterCredential, bytes: &[u8]) -> Result<Self, String> {
        let key = bytes.trim_ascii();
        if key.len() < MIN_ROOT_KEY_BYTES {
            return Err(format!(
                "the meter {} root key has {} bytes; at least {MIN_ROOT_KEY_BYTES} are required",
                credential.label(),
                key.len()
            ));
        }
        Ok(Self {
            credential,
            key: key.to_vec(),
        })
    }

    /// Reads the root key for `credential` from `path`.
    pub fn read(credential: MeterCredential, path: &std::path::Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "reading the meter {} root key {}: {e}",
                credential.label(),
                path.display()
            )
        })?;
        Self::new(credential, &bytes)
    }

    /// The token of the meters of model `model_id` (`namespace/name`): HMAC-SHA256 of the
    /// credential and the id under the root key, in hex.
    pub fn token_for(&self, model_id: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(self.credential.label().as_bytes());
        mac.update(b"\0");
        mac.update(model_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The two tokens one meter checks.
pub struct MeterTokens {
    /// The gateway's.
    pub proxy: String,
    /// Billing's.
    pub usage: String,
}

/// Both root keys of an install (the operator's view; the gateway holds only the proxy key).
#[derive(Debug, Clone)]
pub struct MeterKeys {
    /// Root of the gateway's tokens.
    pub proxy: MeterRootKey,
    /// Root of billing's tokens.
    pub usage: MeterRootKey,
}

/// File names of the root keys in their folder (the keys of the chart's Secret).
pub const PROXY_KEY_FILE: &str = "proxy";
/// See [`PROXY_KEY_FILE`].
pub const USAGE_KEY_FILE: &str = "usage";

impl MeterKeys {
    /// Fresh random root keys (local mode: one set per run).
    pub fn generate() -> Result<Self, String> {
        let random = |credential| {
            let mut bytes = [0u8; 32];
            OsRng
                .try_fill_bytes(&mut bytes)
                .map_err(|e| format!("no randomness for the meter keys: {e}"))?;
            MeterRootKey::new(credential, hex::encode(bytes).as_bytes())
        };
        Ok(Self {
            proxy: random(MeterCredential::Proxy)?,
            usage: random(MeterCredential::Usage)?,
        })
    }

    /// Reads `proxy` and `usage` from `dir` (the mounted Secret).
    pub fn read_dir(dir: &std::path::Path) -> Result<Self, String> {
        Ok(Self {
            proxy: MeterRootKey::read(MeterCredential::Proxy, &dir.join(PROXY_KEY_FILE))?,
            usage: MeterRootKey::read(MeterCredential::Usage, &dir.join(USAGE_KEY_FILE))?,
        })
    }

    /// The tokens of the meters of model `model_id` (`namespace/name`).
    pub fn tokens_for(&self, model_id: &str) -> MeterTokens {
        MeterTokens {
            proxy: self.proxy.token_for(model_id),
            usage: self.usage.token_for(model_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_differ_by_model_and_credential_and_match_rfc_hmac() {
        let proxy = MeterRootKey::new(MeterCredential::Proxy, KEY).unwrap();
        let usage = MeterRootKey::new(MeterCredential::Usage, KEY).unwrap();
        assert_ne!(proxy.token_for("ml/a"), proxy.token_for("ml/b"));
        assert_ne!(proxy.token_for("ml/a"), usage.token_for("ml/a"));
        // Reference: `printf 'proxy\0ml/a' | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef`.
        assert_eq!(
            proxy.token_for("ml/a"),
            "44d23bed295edc8377a647921e916a9f5d9171084245d14fb7abb3a61d254cae"
        );
    }

    #[test]
    fn short_keys_are_refused_naming_the_limit() {
        let error = MeterRootKey::new(MeterCredential::Usage, b"short\n").unwrap_err();
        assert!(
            error.contains("5 bytes") && error.contains("at least 16"),
            "{error}"
        );
    }

    #[test]
    fn generated_keys_are_random_and_read_back_from_their_folder() {
        let (a, b) = (MeterKeys::generate().unwrap(), MeterKeys::generate().unwrap());
        assert_ne!(a.tokens_for("ml/a").proxy, b.tokens_for("ml/a").proxy);
        let dir = std::env::temp_dir().join(format!("hearth-meter-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(PROXY_KEY_FILE), KEY).unwrap();
        std::fs::write(dir.join(USAGE_KEY_FILE), b"fedcba9876543210fedcba9876543210\n").unwrap();
        let keys = MeterKeys::read_dir(&dir).unwrap();
        assert_eq!(
            keys.proxy.token_for("ml/a"),
            MeterRootKey::new(MeterCredential::Proxy, KEY)
                .unwrap()
                .token_for("ml/a")
        );
        std::fs::remove_file(dir.join(USAGE_KEY_FILE)).unwrap();
        let error = MeterKeys::read_dir(&dir).unwrap_err();
        assert!(error.contains("usage root key"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = MeterRootKey::new(MeterCredential::Proxy, KEY).unwrap();
        assert!(!format!("{key:?}").contains("0123"));
    }
}
