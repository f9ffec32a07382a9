//! Overflow-checked arithmetic for byte counts, so absurd inputs become errors, not panics.

use super::error::PlanError;

/// The product of `factors`, or [`PlanError::Overflow`] naming `quantity`.
pub(crate) fn product(quantity: &'static str, factors: &[u64]) -> Result<u64, PlanError> {
    factors
        .iter()
        .try_fold(1_u64, |product, factor| product.checked_mul(*factor))
        .ok_or(PlanError::Overflow { quantity })
}

/// The sum of `terms`, or [`PlanError::Overflow`] naming `quantity`.
pub(crate) fn sum(quantity: &'static str, terms: &[u64]) -> Result<u64, PlanError> {
    terms
        .iter()
        .try_fold(0_u64, |total, term| total.checked_add(*term))
        .ok_or(PlanError::Overflow { quantity })
}
