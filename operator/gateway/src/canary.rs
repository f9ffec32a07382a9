//! Canary and A/B splits: InferenceModels sharing a `servedName` share its traffic by their
//! `weight`. The choice is smooth weighted round-robin (as nginx balances upstreams): each pick
//! adds every eligible variant's weight to its counter, takes the largest counter and subtracts
//! the eligible total from it. It is deterministic, needs no randomness, and spreads the
//! minority variant evenly (9:1 gives one canary request in every ten, not ten in a row).

use super::config::Variant;

/// Split state of one served name: the variants it was built for and their counters.
#[derive(Debug, Default)]
pub struct Split {
    /// `(id, weight)` of each variant the counters belong to.
    variants: Vec<(String, u32)>,
    /// Smooth weighted round-robin counters, one per variant.
    current: Vec<i64>,
}

impl Split {
    /// Picks the index of a variant among those `eligible` allows, in proportion to their
    /// weights. When every eligible weight is 0 they share equally; `None` when nothing is
    /// eligible. A change of the variants or their weights restarts the counters.
    pub fn pick(&mut self, variants: &[Variant], eligible: &dyn Fn(&Variant) -> bool) -> Option<usize> {
        let same = self.variants.len() == variants.len()
            && self
                .variants
                .iter()
                .zip(variants)
                .all(|((id, weight), v)| *id == v.id && *weight == v.weight);
        if !same {
            self.variants = variants.iter().map(|v| (v.id.clone(), v.weight)).collect();
            self.current = vec![0; variants.len()];
        }
        let candidates: Vec<usize> = (0..variants.len()).filter(|&i| eligible(&variants[i])).collect();
        let all_zero = candidates.iter().all(|&i| variants[i].weight == 0);
        let weight = |i: usize| {
            if all_zero {
                1
            } else {
                i64::from(variants[i].weight)
            }
        };
        let total: i64 = candidates.iter().map(|&i| weight(i)).sum();
        let mut best: Option<usize> = None;
        for &i in &candidates {
            self.current[i] += weight(i);
            if weight(i) > 0 && best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.current[chosen] -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(id: &str, weight: u32) -> Variant {
        Variant {
            id: id.to_string(),
            weight,
            replicas: vec![format!("http://{id}:1")],
            scale: None,
            tiers: Default::default(),
        }
    }

    fn counts(
        split: &mut Split,
        variants: &[Variant],
        n: usize,
        eligible: &dyn Fn(&Variant) -> bool,
    ) -> Vec<usize> {
        let mut counts = vec![0; variants.len()];
        for _ in 0..n {
            if let Some(i) = split.pick(variants, eligible) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn nine_to_one_gives_ninety_percent_within_three_points() {
        let variants = [variant("stable", 90), variant("canary", 10)];
        let counts = counts(&mut Split::default(), &variants, 1_000, &|_| true);
        assert!((870..=930).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[0] + counts[1], 1_000);
        // Smooth: the canary never gets two requests in a row at 9:1.
        let mut split = Split::default();
        let picks: Vec<usize> = (0..20).filter_map(|_| split.pick(&variants, &|_| true)).collect();
        assert!(picks.windows(2).all(|w| w != [1, 1]), "{picks:?}");
    }

    #[test]
    fn zero_weight_is_dark_ineligible_variants_are_skipped_and_changes_restart() {
        let variants = [variant("a", 100), variant("dark", 0), variant("b", 100)];
        let counts_all = counts(&mut Split::default(), &variants, 100, &|_| true);
        assert_eq!(counts_all, vec![50, 0, 50]);
        let only_b = counts(&mut Split::default(), &variants, 10, &|v| v.id != "a");
        assert_eq!(only_b, vec![0, 0, 10]);
        let dark_only = counts(&mut Split::default(), &variants, 3, &|v| v.id == "dark");
        assert_eq!(dark_only, vec![0, 3, 0], "an all-zero set shares equally");
        assert_eq!(Split::default().pick(&variants, &|_| false), None);
        let mut split = Split::default();
        split.pick(&variants, &|_| true);
        let reweighted = [variant("a", 1), variant("dark", 0), variant("b", 3)];
        assert_eq!(counts(&mut split, &reweighted, 400, &|_| true), vec![100, 0, 300]);
    }
}
