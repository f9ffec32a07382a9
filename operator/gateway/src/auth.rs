//! API-key authentication: `Authorization: Bearer <key>` → SHA-256 → constant-time comparison
//! against every known hash (the loop never stops early, so timing does not reveal where a
//! match sits) → the tenant's policy. Keys and tenant ids are only ever logged as fingerprints.

use std::sync::Arc;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::config::{Config, TenantPolicy};
use super::error::GatewayError;

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// First 8 hex digits of SHA-256 of `text`: what logs carry instead of a key or a tenant id.
pub fn fingerprint(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..4])
}

/// Resolves a key to its tenant, refusing unknown or revoked keys (401) and suspended or
/// budget-blocked tenants (403).
pub fn authenticate(config: &Config, key: Option<&str>) -> Result<Arc<TenantPolicy>, GatewayError> {
    let key = key.ok_or(GatewayError::MissingKey)?;
    // The same normalisation as `hash_key`, which the operator publishes.
    let digest: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
    let mut found = subtle::Choice::from(0);
    let mut index = 0u64;
    for (i, entry) in config.keys.iter().enumerate() {
        let matches = entry.hash.ct_eq(&digest);
        index = u64::conditional_select(&index, &(i as u64), matches);
        found |= matches;
    }
    if !bool::from(found) {
        return Err(GatewayError::InvalidKey);
    }
    let entry = usize::try_from(index)
        .ok()
        .and_then(|i| config.keys.get(i))
        .ok_or(GatewayError::InvalidKey)?;
    if entry.revoked {
        return Err(GatewayError::RevokedKey);
    }
    let tenant = config
        .tenants
        .get(&*entry.tenant)
        .ok_or(GatewayError::InvalidKey)?;
    if tenant.suspended {
        return Err(GatewayError::Suspended);
    }
    if tenant.budget_blocked {
        return Err(GatewayError::BudgetExceeded);
    }
    Ok(tenant.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{KeyEntry, TierPolicy};
    use hearth_tenancy::keys::hash_key;
    use hearth_tenancy::limits::Limits;

    fn config() -> Config {
        let tier = Arc::new(TierPolicy {
            name: "t".into(),
            priority: 0,
            weight: 1,
            models: vec![],
        });
        let mut tenants = BTreeMap::new();
        for (id, suspended) in [("ns/a", false), ("ns/b", true)] {
            tenants.insert(
                id.to_string(),
                Arc::new(TenantPolicy {
                    id: id.into(),
                    tier: tier.clone(),
                    limits: Limits::default(),
                    suspended,
                    budget_blocked: false,
                    reported_usage: None,
                }),
            );
        }
        let hash = |k: &str| hearth_tenancy::keys::parse_key_hash(&hash_key(k)).unwrap_or_default();
        Config {
            tenants,
            keys: vec![
                KeyEntry {
                    hash: hash("good"),
                    tenant: "ns/a".into(),
                    revoked: false,
                },
                KeyEntry {
                    hash: hash("old"),
                    tenant: "ns/a".into(),
                    revoked: true,
                },
                KeyEntry {
                    hash: hash("paused"),
                    tenant: "ns/b".into(),
                    revoked: false,
                },
            ],
            models: BTreeMap::new(),
        }
    }

    #[test]
    fn keys_resolve_or_are_refused_with_the_right_reason() {
        let config = config();
        assert_eq!(
            &*authenticate(&config, Some("good"))
                .map(|t| t.id.clone())
                .unwrap_or_default(),
            "ns/a"
        );
        assert!(matches!(
            authenticate(&config, Some("nope")),
            Err(GatewayError::InvalidKey)
        ));
        assert!(matches!(
            authenticate(&config, Some("old")),
            Err(GatewayError::RevokedKey)
        ));
        assert!(matches!(
            authenticate(&config, Some("paused")),
            Err(GatewayError::Suspended)
        ));
        assert!(matches!(
            authenticate(&config, None),
            Err(GatewayError::MissingKey)
        ));
    }

    #[test]
    fn bearer_parsing_is_strict_about_the_scheme() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            "Bearer  abc ".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(
            "authorization",
            "Basic abc".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(bearer_token(&headers), None);
        assert_eq!(fingerprint("x").len(), 8);
    }
}
