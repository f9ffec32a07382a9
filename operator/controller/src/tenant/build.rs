//! Pure builder of the Secret that holds a generated API key.

use std::collections::BTreeMap;

use hearth_crds::Tenant;
use hearth_crds::constants::{LABEL_API_KEY, LABEL_TENANT, MANAGED_BY, SECRET_KEY_FIELD};
use hearth_crds::tenant::ApiKey;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use hearth_kube::error::{Error, Result};
use hearth_tenancy::keys::generated_secret_name;

/// The Secret that holds `key`: its `secretRef`, or the generated name.
pub fn secret_name(tenant: &Tenant, key: &ApiKey) -> String {
    match &key.secret_ref {
        Some(reference) => reference.name.clone(),
        None => generated_secret_name(tenant.metadata.name.as_deref().unwrap_or_default(), &key.name),
    }
}

/// An immutable Secret holding a freshly generated key, owned by the tenant.
pub fn build_key_secret(tenant: &Tenant, key: &ApiKey, value: &str) -> Result<Secret> {
    let tenant_name = tenant
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(tenant, key)),
            namespace: tenant.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_string(), MANAGED_BY.to_string()),
                (LABEL_TENANT.to_string(), tenant_name),
                (LABEL_API_KEY.to_string(), key.name.clone()),
            ])),
            owner_references: Some(vec![
                tenant
                    .controller_owner_ref(&())
                    .ok_or(Error::MissingMetadata("uid"))?,
            ]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            SECRET_KEY_FIELD.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    })
}
