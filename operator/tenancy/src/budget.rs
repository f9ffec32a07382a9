//! When a tenant's budget blocks it: the `BudgetExceeded` condition billing writes, read the
//! same way by the gateway (in a cluster) and local mode.

use hearth_crds::Tenant;
use hearth_crds::conditions::{self, BUDGET_EXCEEDED};
use hearth_crds::tenant::BudgetAction;

/// Reasons of the `BudgetExceeded` condition.
pub mod reason {
    /// Spending passed `budget.monthlyLimit`.
    pub const MONTHLY_LIMIT_REACHED: &str = "MonthlyLimitReached";
    /// Tokens passed the monthly quota.
    pub const QUOTA_REACHED: &str = "TokenQuotaReached";
    /// Within budget and quota.
    pub const WITHIN_BUDGET: &str = "WithinBudget";
}

/// True when the tenant's requests must be refused: over budget with action `Block`, or over
/// its token quota.
pub fn is_blocked(tenant: &Tenant) -> bool {
    let over = |reason: &str| {
        tenant
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, BUDGET_EXCEEDED))
            .is_some_and(|c| c.status == "True" && c.reason == reason)
    };
    let blocks = tenant
        .spec
        .budget
        .as_ref()
        .is_some_and(|b| b.action == BudgetAction::Block);
    (blocks && over(reason::MONTHLY_LIMIT_REACHED)) || over(reason::QUOTA_REACHED)
}
