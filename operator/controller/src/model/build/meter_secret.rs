//! The model's meter Secret: the two tokens its meters check (the gateway's and billing's),
//! derived from the install's root keys, so the meter learns nothing that works elsewhere.

use std::collections::BTreeMap;

use hearth_crds::InferenceModel;
use hearth_tenancy::meter_tokens::MeterKeys;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::child_meta;
use hearth_kube::error::Result;

/// Key of the gateway's token in the Secret.
pub const PROXY_TOKEN_KEY: &str = "proxy-token";
/// Key of billing's token in the Secret.
pub const USAGE_TOKEN_KEY: &str = "usage-token";

/// Name of the model's meter Secret.
pub fn meter_secret_name(model: &InferenceModel) -> Option<String> {
    hearth_tenancy::child_name(model).map(|name| format!("{name}-meter"))
}

/// Builds the Secret holding the tokens of `model`'s meters.
pub fn build_meter_secret(model: &InferenceModel, keys: &MeterKeys) -> Result<Secret> {
    let tokens = keys.tokens_for(&hearth_tenancy::object_id(&model.metadata));
    let mut metadata = child_meta(model)?;
    metadata.name = meter_secret_name(model);
    Ok(Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (PROXY_TOKEN_KEY.to_string(), ByteString(tokens.proxy.into_bytes())),
            (USAGE_TOKEN_KEY.to_string(), ByteString(tokens.usage.into_bytes())),
        ])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::fixtures::representative;
    use hearth_tenancy::meter_tokens::{MeterCredential, MeterRootKey};

    #[test]
    fn the_secret_holds_this_models_tokens_only() {
        let keys = MeterKeys {
            proxy: MeterRootKey::new(MeterCredential::Proxy, b"proxy-root-key-0123456789").unwrap(),
            usage: MeterRootKey::new(MeterCredential::Usage, b"usage-root-key-0123456789").unwrap(),
        };
        let secret = build_meter_secret(&representative(), &keys).expect("builds");
        assert_eq!(secret.metadata.name.as_deref(), Some("llama-meter"));
        assert_eq!(secret.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        let data = secret.data.expect("data");
        assert_eq!(
            data[PROXY_TOKEN_KEY].0,
            keys.proxy.token_for("ml/llama").into_bytes()
        );
        assert_eq!(
            data[USAGE_TOKEN_KEY].0,
            keys.usage.token_for("ml/llama").into_bytes()
        );
    }
}
