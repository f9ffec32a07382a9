//! Tenant statuses that local billing computes. In a cluster the aggregator writes usage and
//! the `BudgetExceeded` condition to `Tenant.status` and the gateway reads them from there;
//! local mode has no API server, so billing publishes them here and the gateway's local
//! source lays them over the tenants it reads from the YAML folder.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::LocalConfig;
use hearth_billing::aggregator::TenantStatuses;
use hearth_tenancy::object_id;

/// The latest statuses with a version that changes whenever they do.
#[derive(Debug, Default)]
pub struct LocalStatuses {
    version: AtomicU64,
    statuses: RwLock<TenantStatuses>,
}

impl LocalStatuses {
    /// Replaces the statuses; the version moves only when something differs (conditions'
    /// transition times included, so an unchanged pass leaves the gateway's snapshot alone).
    pub fn publish(&self, statuses: TenantStatuses) {
        let Ok(mut current) = self.statuses.write() else {
            return;
        };
        if *current != statuses {
            *current = statuses;
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Changes with every published change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Sets `status.usage` and the `BudgetExceeded` condition of every tenant in `config`
    /// that billing has evaluated.
    pub fn apply(&self, config: &mut LocalConfig) {
        let Ok(statuses) = self.statuses.read() else {
            return;
        };
        for (_, tenant) in &mut config.tenants {
            let Some((usage, condition)) = statuses.get(&object_id(&tenant.metadata)) else {
                continue;
            };
            let status = tenant.status.get_or_insert_with(Default::default);
            status.usage = Some(usage.clone());
            status.conditions.retain(|c| c.type_ != condition.type_);
            status.conditions.push(condition.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_crds::Tenant;
    use hearth_crds::conditions::BUDGET_EXCEEDED;
    use hearth_crds::tenant::TenantUsage;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn tenant(name: &str) -> Tenant {
        serde_yaml::from_str(&format!(
            "apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}, namespace: default}}\nspec: {{tierRef: t, budget: {{monthlyLimit: \"1\", action: Block}}}}\n"
        ))
        .expect("tenant YAML")
    }

    fn exceeded() -> Condition {
        Condition {
            type_: BUDGET_EXCEEDED.to_string(),
            status: "True".to_string(),
            reason: hearth_tenancy::budget::reason::MONTHLY_LIMIT_REACHED.to_string(),
            message: "spent".to_string(),
            observed_generation: None,
            last_transition_time: hearth_kube::now(),
        }
    }

    #[test]
    fn published_conditions_block_the_tenant_they_name_only() {
        let statuses = LocalStatuses::default();
        let mut config = LocalConfig {
            tiers: Vec::new(),
            tenants: vec![
                ("a.yaml".into(), tenant("spender")),
                ("b.yaml".into(), tenant("saver")),
            ],
            models: Vec::new(),
        };
        let before = statuses.version();
        let usage = TenantUsage {
            period: "2026-11".into(),
            ..TenantUsage::default()
        };
        let published: TenantStatuses = [("default/spender".to_string(), (usage, exceeded()))].into();
        statuses.publish(published.clone());
        assert_ne!(statuses.version(), before, "a change moves the version");
        let after = statuses.version();
        statuses.publish(published);
        assert_eq!(
            statuses.version(),
            after,
            "the same statuses again change nothing"
        );
        statuses.apply(&mut config);
        let blocked: Vec<bool> = config
            .tenants
            .iter()
            .map(|(_, t)| hearth_tenancy::budget::is_blocked(t))
            .collect();
        assert_eq!(blocked, vec![true, false]);
    }
}
