//! Prices as exact decimals (never floats for money) and the calendar-month billing period.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

/// Pricing errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PricingError {
    /// A price string is not a decimal.
    #[error("{field}: {value:?} is not a decimal amount")]
    NotDecimal {
        /// The Tier field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// A period string is not `YYYY-MM`.
    #[error("period {0:?} must be YYYY-MM")]
    BadPeriod(String),
}

/// Per-million-token prices of a tier, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    /// ISO 4217 code.
    pub currency: String,
    /// Price per million prompt tokens.
    pub input_per_million: Decimal,
    /// Price per million completion tokens.
    pub output_per_million: Decimal,
    /// Price per GPU-hour (zero when the tier sets none).
    pub gpu_hour: Decimal,
}

impl Prices {
    /// Parses a Tier's decimal strings; an absent pricing block is free.
    pub fn parse(currency: &str, input: &str, output: &str) -> Result<Self, PricingError> {
        Ok(Self {
            currency: currency.to_string(),
            input_per_million: parse_decimal("pricing.inputPerMillionTokens", input)?,
            output_per_million: parse_decimal("pricing.outputPerMillionTokens", output)?,
            gpu_hour: Decimal::ZERO,
        })
    }

    /// These prices with `pricing.gpuHour`, when the tier sets one.
    pub fn with_gpu_hour(self, gpu_hour: Option<&str>) -> Result<Self, PricingError> {
        Ok(Self {
            gpu_hour: match gpu_hour {
                Some(price) => parse_decimal("pricing.gpuHour", price)?,
                None => Decimal::ZERO,
            },
            ..self
        })
    }

    /// No charge, in `currency`.
    pub fn free(currency: &str) -> Self {
        Self {
            currency: currency.to_string(),
            input_per_million: Decimal::ZERO,
            output_per_million: Decimal::ZERO,
            gpu_hour: Decimal::ZERO,
        }
    }

    /// Exact charge for the token counts (not rounded).
    pub fn charge(&self, prompt_tokens: u64, completion_tokens: u64) -> Decimal {
        let million = Decimal::from(1_000_000u64);
        (Decimal::from(prompt_tokens) * self.input_per_million
            + Decimal::from(completion_tokens) * self.output_per_million)
            / million
    }

    /// Charge for `gpu_milliseconds` of GPU time (multiplied before dividing, not rounded
    /// to cents).
    pub fn gpu_charge(&self, gpu_milliseconds: u64) -> Decimal {
        Decimal::from(gpu_milliseconds) * self.gpu_hour / Decimal::from(MILLISECONDS_PER_HOUR)
    }
}

const MILLISECONDS_PER_HOUR: u64 = 3_600_000;

/// GPU-milliseconds as GPU-hours, to 6 decimal places (what an invoice line shows).
pub fn gpu_hours(gpu_milliseconds: u64) -> Decimal {
    (Decimal::from(gpu_milliseconds) / Decimal::from(MILLISECONDS_PER_HOUR)).round_dp(6)
}

/// A Tier price string as a decimal: only plain decimals, as the CRD schema allows
/// (`Decimal::from_str` alone would take "1e3").
fn parse_decimal(field: &'static str, value: &str) -> Result<Decimal, PricingError> {
    hearth_crds::validation::is_decimal(value)
        .then(|| Decimal::from_str(value).ok())
        .flatten()
        .ok_or_else(|| PricingError::NotDecimal {
            field,
            value: value.to_string(),
        })
}

/// Rounds an amount to cents, halves away from zero (how invoices are usually rounded).
pub fn to_cents(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// The billing period (`YYYY-MM`, UTC) a Unix-millisecond instant falls in.
pub fn period_of(unix_ms: u64) -> String {
    let instant = DateTime::<Utc>::from_timestamp_millis(i64::try_from(unix_ms).unwrap_or(i64::MAX))
        .unwrap_or_default();
    format!("{:04}-{:02}", instant.year(), instant.month())
}

/// The period `months` before `period` (both `YYYY-MM`).
pub fn months_before(period: &str, months: u32) -> Result<String, PricingError> {
    let (year, month) = parse_period(period)?;
    let index = i64::from(year) * 12 + i64::from(month - 1) - i64::from(months);
    Ok(format!(
        "{:04}-{:02}",
        index.div_euclid(12),
        index.rem_euclid(12) + 1
    ))
}

/// Checks a `YYYY-MM` period string.
pub fn parse_period(period: &str) -> Result<(i32, u32), PricingError> {
    let bad = || PricingError::BadPeriod(period.to_string());
    let (year, month) = period.split_once('-').ok_or_else(bad)?;
    if year.len() != 4 || month.len() != 2 {
        return Err(bad());
    }
    let year: i32 = year.parse().map_err(|_| bad())?;
    let month: u32 = month.parse().map_err(|_| bad())?;
    if (1..=12).contains(&month) {
        Ok((year, month))
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_exact_and_round_half_away_from_zero() {
        let prices = Prices::parse("USD", "0.50", "1.50").expect("prices");
        // 1,234,567 × 0.50 / 1e6 = 0.6172835; 89,012 × 1.50 / 1e6 = 0.133518; sum 0.7508015.
        assert_eq!(
            prices.charge(1_234_567, 89_012),
            Decimal::from_str("0.7508015").expect("decimal")
        );
        assert_eq!(
            to_cents(Decimal::from_str("0.7508015").expect("d")),
            Decimal::from_str("0.75").expect("d")
        );
        assert_eq!(
            to_cents(Decimal::from_str("0.125").expect("d")),
            Decimal::from_str("0.13").expect("d")
        );
        // Floats would drift here: 0.1 + 0.2 ≠ 0.3 in binary, but exactly so in decimal.
        let tenth = Prices::parse("USD", "0.1", "0.2").expect("prices");
        assert_eq!(
            tenth.charge(1_000_000, 1_000_000),
            Decimal::from_str("0.3").expect("d")
        );
        assert!(matches!(
            Prices::parse("USD", "1e3", "1"),
            Err(PricingError::NotDecimal {
                field: "pricing.inputPerMillionTokens",
                ..
            })
        ));
    }

    #[test]
    fn gpu_time_is_priced_by_the_hour_exactly() {
        let prices = Prices::parse("USD", "0", "0")
            .and_then(|p| p.with_gpu_hour(Some("2.50")))
            .expect("prices");
        // 90 GPU-minutes at $2.50 = $3.75; one GPU-second = 2.50 / 3600 = 0.000694…
        assert_eq!(
            prices.gpu_charge(5_400_000),
            Decimal::from_str("3.75").expect("d")
        );
        assert_eq!(to_cents(prices.gpu_charge(1_000)), Decimal::ZERO);
        assert!(matches!(
            Prices::free("USD").with_gpu_hour(Some("-1")),
            Err(PricingError::NotDecimal {
                field: "pricing.gpuHour",
                ..
            })
        ));
    }

    #[test]
    fn periods_are_utc_calendar_months() {
        // 2026-11-30T23:59:59.999Z and one millisecond later.
        assert_eq!(period_of(1_796_083_199_999), "2026-11");
        assert_eq!(period_of(1_796_083_200_000), "2026-12");
        assert_eq!(parse_period("2026-11"), Ok((2026, 11)));
        assert!(parse_period("2026-13").is_err());
        assert!(parse_period("26-1").is_err());
    }
}
