//! API keys: generation (256 random bits), hashing and fingerprints. The key itself lives only
//! in its Secret; everything else sees `sha256:<hex>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// Prefix of generated keys, so leaked keys are recognisable by secret scanners.
pub const KEY_PREFIX: &str = "hth_";

/// A new random key: `hth_` + 32 bytes from the OS RNG, base64url without padding.
pub fn generate_key() -> Result<String, rand::rand_core::OsError> {
    let mut bytes = [0u8; 32];
    OsRng.try_fill_bytes(&mut bytes)?;
    Ok(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// `sha256:<hex>` of the key, as published in `Tenant.status.apiKeys[].hash`.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.trim().as_bytes())))
}

/// First 8 hex digits of the hash, for humans to tell keys apart.
pub fn fingerprint(hash: &str) -> String {
    hash.trim_start_matches("sha256:").chars().take(8).collect()
}

/// Parses `sha256:<64 hex>` into bytes; anything else is not a usable hash.
pub fn parse_key_hash(text: &str) -> Option<[u8; 32]> {
    let hex_digits = text.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

/// Name of the Secret the operator generates for key `key_name` of tenant `tenant`.
/// Key names cannot contain dots, so the name is unambiguous.
pub fn generated_secret_name(tenant: &str, key_name: &str) -> String {
    format!("{tenant}.apikey.{key_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_random_256_bit_and_hash_stably() {
        let a = generate_key().expect("rng");
        let b = generate_key().expect("rng");
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        let decoded = URL_SAFE_NO_PAD.decode(&a[KEY_PREFIX.len()..]).expect("base64url");
        assert_eq!(decoded.len(), 32);
        // sha256("abc"), from FIPS 180-2 appendix B.1.
        assert_eq!(
            hash_key("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fingerprint(&hash_key("abc")), "ba7816bf");
        assert_eq!(generated_secret_name("acme", "ci"), "acme.apikey.ci");
    }
}
