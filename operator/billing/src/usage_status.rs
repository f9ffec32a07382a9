//! From stored totals to `Tenant.status.usage` and the `BudgetExceeded` condition, written
//! with the billing field manager so the Tenant controller's fields are left alone.

use std::collections::BTreeMap;

use hearth_crds::conditions::{self, BUDGET_EXCEEDED};
use hearth_crds::tenant::{TenantStatus, TenantUsage};
use hearth_crds::{Tenant, Tier};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Client;
use rust_decimal::Decimal;

use super::gpu_share::Totals;
use super::invoice::{Invoice, build_invoice};
use super::pricing::{Prices, PricingError};
use hearth_kube::Error;
use hearth_tenancy::budget::reason;
use hearth_tenancy::object_id;

/// Field manager of everything billing writes.
pub const BILLING_FIELD_MANAGER: &str = "hearth-billing";

/// The tier's prices (free when it sets none).
pub fn prices_of(tier: Option<&Tier>) -> Result<Prices, PricingError> {
    match tier.and_then(|t| t.spec.pricing.as_ref()) {
        Some(p) => Prices::parse(
            &p.currency,
            &p.input_per_million_tokens,
            &p.output_per_million_tokens,
        )?
        .with_gpu_hour(p.gpu_hour.as_deref()),
        None => Ok(Prices::free("USD")),
    }
}

/// The tenant's monthly token quota: the stricter of the tier's and the tenant's override.
pub fn token_quota(tenant: &Tenant, tier: Option<&Tier>) -> Option<u64> {
    let from_tier = tier
        .and_then(|t| t.spec.quota.as_ref())
        .and_then(|q| q.tokens_per_month);
    let from_tenant = tenant
        .spec
        .overrides
        .as_ref()
        .and_then(|o| o.quota.as_ref())
        .and_then(|q| q.tokens_per_month);
    match (from_tier, from_tenant) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The invoice, usage block and budget condition for one tenant and period.
pub fn evaluate(
    tenant: &Tenant,
    tier: Option<&Tier>,
    period: &str,
    totals: &BTreeMap<String, Totals>,
    now: Time,
) -> Result<(Invoice, TenantUsage, Condition), PricingError> {
    let invoice = build_invoice(&object_id(&tenant.metadata), period, &prices_of(tier)?, totals);
    let usage = TenantUsage {
        period: period.to_string(),
        requests: invoice.requests,
        prompt_tokens: invoice.prompt_tokens,
        completion_tokens: invoice.completion_tokens,
        cost: invoice.total.to_string(),
    };
    let tokens = invoice.prompt_tokens + invoice.completion_tokens;
    let budget = tenant.spec.budget.as_ref();
    let limit = budget.and_then(|b| b.monthly_limit.parse::<Decimal>().ok());
    let previous = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = tenant.metadata.generation;
    let condition = match (limit, token_quota(tenant, tier)) {
        (Some(limit), _) if invoice.total >= limit => conditions::condition(
            previous,
            BUDGET_EXCEEDED,
            true,
            reason::MONTHLY_LIMIT_REACHED,
            format!(
                "spent {} {} of the {} monthly limit in {period}; action {:?}",
                invoice.total,
                invoice.currency,
                limit,
                budget.map(|b| b.action).unwrap_or_default()
            ),
            generation,
            now,
        ),
        (_, Some(quota)) if tokens >= quota => conditions::condition(
            previous,
            BUDGET_EXCEEDED,
            true,
            reason::QUOTA_REACHED,
            format!("used {tokens} of {quota} tokens in {period}"),
            generation,
            now,
        ),
        _ => conditions::condition(
            previous,
            BUDGET_EXCEEDED,
            false,
            reason::WITHIN_BUDGET,
            format!(
                "spent {} {} and {tokens} tokens in {period}",
                invoice.total, invoice.currency
            ),
            generation,
            now,
        ),
    };
    Ok((invoice, usage, condition))
}

/// Writes usage and the budget condition unless the tenant already shows exactly them.
pub async fn write_usage(
    client: &Client,
    tenant: &Tenant,
    usage: TenantUsage,
    condition: Condition,
) -> hearth_kube::Result<bool> {
    let current = tenant.status.clone().unwrap_or_default();
    let unchanged = current.usage.as_ref() == Some(&usage)
        && conditions::find(&current.conditions, BUDGET_EXCEEDED) == Some(&condition);
    if unchanged {
        return Ok(false);
    }
    let status = TenantStatus {
        usage: Some(usage),
        conditions: vec![condition],
        ..TenantStatus::default()
    };
    // Only our fields: usage and the BudgetExceeded entry of the conditions list-map.
    let mut body = serde_json::to_value(&status).map_err(|source| Error::Serialize {
        kind: "status",
        source,
    })?;
    if let Some(object) = body.as_object_mut() {
        object.remove("apiKeys");
    }
    hearth_kube::ssa::apply_status(client, tenant, body, BILLING_FIELD_MANAGER).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_crds::tenant::BudgetAction;
    use hearth_tenancy::budget::is_blocked;

    fn tenant(yaml: &str) -> Tenant {
        serde_yaml::from_str(yaml).expect("tenant")
    }

    fn tier(yaml: &str) -> Tier {
        serde_yaml::from_str(yaml).expect("tier")
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_795_000_000).expect("time"))
    }

    #[test]
    fn crossing_the_monthly_limit_sets_budget_exceeded_and_blocks() {
        let gold = tier(
            "apiVersion: hearth.dev/v1alpha1\nkind: Tier\nmetadata: {name: gold}\nspec: {pricing: {inputPerMillionTokens: '1.00', outputPerMillionTokens: '2.00'}}\n",
        );
        let mut acme = tenant(
            "apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {name: acme, namespace: ns}\nspec: {tierRef: gold, budget: {monthlyLimit: '5.00', action: Block}}\n",
        );
        // 2,000,000 × 1.00 + 1,000,000 × 2.00 per million = $4.00: within the $5 budget.
        let under = BTreeMap::from([(
            "m".to_string(),
            Totals {
                requests: 3,
                prompt_tokens: 2_000_000,
                completion_tokens: 1_000_000,
                estimated_requests: 0,
                ..Totals::default()
            },
        )]);
        let (_, usage, condition) = evaluate(&acme, Some(&gold), "2026-11", &under, now()).expect("prices");
        assert_eq!(usage.cost, "4.00");
        assert_eq!(condition.status, "False");
        // One more million completion tokens: $6.00 ≥ $5.00.
        let over = BTreeMap::from([(
            "m".to_string(),
            Totals {
                requests: 4,
                prompt_tokens: 2_000_000,
                completion_tokens: 2_000_000,
                estimated_requests: 0,
                ..Totals::default()
            },
        )]);
        let (_, usage, condition) = evaluate(&acme, Some(&gold), "2026-11", &over, now()).expect("prices");
        assert_eq!(usage.cost, "6.00");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", reason::MONTHLY_LIMIT_REACHED)
        );
        assert!(
            !is_blocked(&acme),
            "not blocked until the condition is on the object"
        );
        acme.status = Some(TenantStatus {
            conditions: vec![condition.clone()],
            ..TenantStatus::default()
        });
        assert!(is_blocked(&acme));
        // With action Notify the same condition does not block.
        acme.spec.budget.as_mut().expect("budget").action = BudgetAction::Notify;
        assert!(!is_blocked(&acme));
    }

    #[test]
    fn the_stricter_quota_applies() {
        let free = tier(
            "apiVersion: hearth.dev/v1alpha1\nkind: Tier\nmetadata: {name: free}\nspec: {quota: {tokensPerMonth: 1000}}\n",
        );
        let hobby = tenant(
            "apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {name: h, namespace: ns}\nspec: {tierRef: free, overrides: {quota: {tokensPerMonth: 500}}}\n",
        );
        assert_eq!(token_quota(&hobby, Some(&free)), Some(500));
        let totals = BTreeMap::from([(
            "m".to_string(),
            Totals {
                requests: 1,
                prompt_tokens: 400,
                completion_tokens: 100,
                estimated_requests: 0,
                ..Totals::default()
            },
        )]);
        let (_, _, condition) = evaluate(&hobby, Some(&free), "2026-11", &totals, now()).expect("free");
        assert_eq!(condition.reason, reason::QUOTA_REACHED);
    }
}
