//! Finding meters: running pods of InferenceModels with metering on, by their label.

use hearth_crds::constants::{LABEL_METERED, PORT_METER};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

/// A meter to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    /// Stable id of the meter's ledger: the pod's namespace, name and uid (a new pod has a new
    /// ledger volume, so a new id).
    pub id: String,
    /// Base URL of the meter's API.
    pub url: String,
}

/// Meters of running, metered pods in the cluster.
pub async fn metered_pods(client: &Client) -> kube::Result<Vec<Meter>> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().labels(&format!("{LABEL_METERED}=true")))
        .await?;
    Ok(list.items.iter().filter_map(meter_of).collect())
}

/// The meter of a pod that is running and has an IP.
pub fn meter_of(pod: &Pod) -> Option<Meter> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip = status.pod_ip.as_deref()?;
    let meta = &pod.metadata;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Some(Meter {
        id: format!(
            "{}/{}/{}",
            meta.namespace.as_deref()?,
            meta.name.as_deref()?,
            meta.uid.as_deref()?
        ),
        url: format!("http://{host}:{PORT_METER}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_pods_with_an_ip_are_meters() {
        let pod = |phase: &str, ip: Option<&str>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "llama-1", "namespace": "ml", "uid": "u1"},
                "status": {"phase": phase, "podIP": ip}
            }))
            .expect("pod")
        };
        assert_eq!(
            meter_of(&pod("Running", Some("10.0.0.7"))),
            Some(Meter {
                id: "ml/llama-1/u1".into(),
                url: "http://10.0.0.7:8001".into()
            })
        );
        assert_eq!(
            meter_of(&pod("Running", Some("fd00::7"))).map(|m| m.url),
            Some("http://[fd00::7]:8001".into())
        );
        assert_eq!(meter_of(&pod("Pending", Some("10.0.0.7"))), None);
        assert_eq!(meter_of(&pod("Running", None)), None);
    }
}
