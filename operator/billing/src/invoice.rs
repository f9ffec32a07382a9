//! Invoices: line items per model with unit prices and amounts, as JSON and CSV.

use std::collections::BTreeMap;
use std::fmt::Write;

use rust_decimal::Decimal;
use serde::Serialize;

use super::gpu_share::Totals;
use super::pricing::{Prices, gpu_hours, to_cents};

/// One model's usage in the period, priced.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    /// Served model name.
    pub model: String,
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Price per million prompt tokens.
    pub input_per_million_tokens: Decimal,
    /// Price per million completion tokens.
    pub output_per_million_tokens: Decimal,
    /// The tenant's share of the model's GPU time, in GPU-hours.
    pub gpu_hours: Decimal,
    /// Price per GPU-hour (zero when the tier prices tokens only).
    pub gpu_hour_price: Decimal,
    /// Amount (tokens plus GPU time), rounded to cents.
    pub amount: Decimal,
}

/// A tenant's invoice for one month.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    /// `namespace/name`.
    pub tenant: String,
    /// `YYYY-MM` (UTC).
    pub period: String,
    /// Currency of every amount.
    pub currency: String,
    /// Lines, by model name.
    pub lines: Vec<LineItem>,
    /// Requests in the period.
    pub requests: u64,
    /// Prompt tokens in the period.
    pub prompt_tokens: u64,
    /// Completion tokens in the period.
    pub completion_tokens: u64,
    /// Sum of the rounded line amounts.
    pub total: Decimal,
}

/// Prices a tenant's totals into an invoice.
pub fn build_invoice(
    tenant: &str,
    period: &str,
    prices: &Prices,
    totals: &BTreeMap<String, Totals>,
) -> Invoice {
    let lines: Vec<LineItem> = totals
        .iter()
        .map(|(model, t)| LineItem {
            model: model.clone(),
            requests: t.requests,
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            input_per_million_tokens: prices.input_per_million,
            output_per_million_tokens: prices.output_per_million,
            gpu_hours: gpu_hours(t.gpu_milliseconds),
            gpu_hour_price: prices.gpu_hour,
            amount: to_cents(
                prices.charge(t.prompt_tokens, t.completion_tokens) + prices.gpu_charge(t.gpu_milliseconds),
            ),
        })
        .collect();
    Invoice {
        tenant: tenant.to_string(),
        period: period.to_string(),
        currency: prices.currency.clone(),
        requests: lines.iter().map(|l| l.requests).sum(),
        prompt_tokens: lines.iter().map(|l| l.prompt_tokens).sum(),
        completion_tokens: lines.iter().map(|l| l.completion_tokens).sum(),
        total: lines.iter().map(|l| l.amount).sum(),
        lines,
    }
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

impl Invoice {
    /// The invoice as CSV: a header, one row per model, and a total row.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "tenant,period,currency,model,requests,prompt_tokens,completion_tokens,input_per_million_tokens,output_per_million_tokens,gpu_hours,gpu_hour_price,amount\n",
        );
        let prefix = format!(
            "{},{},{}",
            csv_field(&self.tenant),
            csv_field(&self.period),
            csv_field(&self.currency)
        );
        for line in &self.lines {
            let _ = writeln!(
                out,
                "{prefix},{},{},{},{},{},{},{},{},{}",
                csv_field(&line.model),
                line.requests,
                line.prompt_tokens,
                line.completion_tokens,
                line.input_per_million_tokens,
                line.output_per_million_tokens,
                line.gpu_hours,
                line.gpu_hour_price,
                line.amount
            );
        }
        let _ = writeln!(
            out,
            "{prefix},TOTAL,{},{},{},,,,,{}",
            self.requests, self.prompt_tokens, self.completion_tokens, self.total
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn totals(rows: &[(&str, u64, u64, u64)]) -> BTreeMap<String, Totals> {
        rows.iter()
            .map(|(model, requests, prompt, completion)| {
                (
                    model.to_string(),
                    Totals {
                        requests: *requests,
                        prompt_tokens: *prompt,
                        completion_tokens: *completion,
                        estimated_requests: 0,
                        gpu_milliseconds: 0,
                    },
                )
            })
            .collect()
    }

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).expect("decimal")
    }

    #[test]
    fn gold_and_free_tier_invoices_match_hand_computation_to_the_cent() {
        // Gold: $0.50 in / $1.50 out per million.
        //   llama: 12,345,678 × 0.50 / 1e6 = 6.172839; 2,345,678 × 1.50 / 1e6 = 3.518517 → 9.691356 → $9.69
        //   qwen:     400,001 × 0.50 / 1e6 = 0.2000005;   99,999 × 1.50 / 1e6 = 0.1499985 → 0.349999 → $0.35
        //   total $10.04
        let gold = Prices::parse("USD", "0.50", "1.50").expect("prices");
        let usage = totals(&[
            ("llama", 1000, 12_345_678, 2_345_678),
            ("qwen", 10, 400_001, 99_999),
        ]);
        let invoice = build_invoice("ns/acme", "2026-11", &gold, &usage);
        assert_eq!(invoice.lines[0].amount, dec("9.69"));
        assert_eq!(invoice.lines[1].amount, dec("0.35"));
        assert_eq!(invoice.total, dec("10.04"));
        assert_eq!(
            (invoice.requests, invoice.prompt_tokens, invoice.completion_tokens),
            (1010, 12_745_679, 2_445_677)
        );

        // Silver in EUR: €0.10 in / €0.30 out.
        //   llama: 5,000,000 × 0.10 / 1e6 = 0.50; 1,666,667 × 0.30 / 1e6 = 0.5000001 → 1.0000001 → €1.00
        let silver = Prices::parse("EUR", "0.10", "0.30").expect("prices");
        let invoice = build_invoice(
            "ns/hobby",
            "2026-11",
            &silver,
            &totals(&[("llama", 3, 5_000_000, 1_666_667)]),
        );
        assert_eq!(invoice.total, dec("1.00"));
        assert_eq!(invoice.currency, "EUR");
        let csv = invoice.to_csv();
        assert_eq!(
            csv,
            "tenant,period,currency,model,requests,prompt_tokens,completion_tokens,input_per_million_tokens,output_per_million_tokens,gpu_hours,gpu_hour_price,amount\n\
             ns/hobby,2026-11,EUR,llama,3,5000000,1666667,0.10,0.30,0,0,1.00\n\
             ns/hobby,2026-11,EUR,TOTAL,3,5000000,1666667,,,,,1.00\n"
        );
        let json = serde_json::to_value(&invoice).expect("json");
        assert_eq!(json["total"], "1.00");
        assert_eq!(json["lines"][0]["inputPerMillionTokens"], "0.10");
    }

    #[test]
    fn gpu_time_adds_a_priced_share_to_the_line() {
        // Tokens $0.50 in / $1.50 out, GPU $2.40 an hour. llama: 1,000,000 in, 200,000 out
        // → 0.50 + 0.30 = 0.80; 1.25 GPU-hours (4,500,000 ms) × 2.40 = 3.00 → $3.80.
        let prices = Prices::parse("USD", "0.50", "1.50")
            .and_then(|p| p.with_gpu_hour(Some("2.40")))
            .expect("prices");
        let mut usage = totals(&[("llama", 2, 1_000_000, 200_000)]);
        usage.get_mut("llama").expect("line").gpu_milliseconds = 4_500_000;
        let invoice = build_invoice("ns/acme", "2026-11", &prices, &usage);
        assert_eq!(invoice.lines[0].gpu_hours, dec("1.25"));
        assert_eq!(invoice.lines[0].gpu_hour_price, dec("2.40"));
        assert_eq!(invoice.total, dec("3.80"));
        assert!(invoice.to_csv().contains(",0.50,1.50,1.25,2.40,3.80\n"));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
