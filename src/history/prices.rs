//! The embedded price table: what a request costs when claude did not say (requests seen only
//! in transcripts). Such costs are estimates and the report marks them so.
//!
//! Anthropic list prices in USD per million tokens, from Anthropic's pricing page as of
//! [`PRICE_TABLE_VERSION`], cross-checked with claude 2.1.197's own `cost_usd` for the models
//! the tests use (tests/support/anthropic.rs, `Pricing`). Cache writes cost 1.25 × input (5
//! minutes) or 2 × input (1 hour), cache reads 0.1 × input. Models with a 1M-token context
//! bill a request whose prompt exceeds 200K tokens at the long-context rates (input and cache
//! × 2, output × 1.5).

/// Which table estimates were made with; `report --json` names it beside estimated costs.
pub const PRICE_TABLE_VERSION: &str = "anthropic-2026-02";

/// Rates of one model, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Cache reads (hits and refreshes).
    pub cache_read: f64,
    /// Cache writes with the default 5-minute lifetime.
    pub cache_write_5m: f64,
    /// Cache writes with a 1-hour lifetime.
    pub cache_write_1h: f64,
}

impl Price {
    const fn from_io(input: f64, output: f64) -> Price {
        Price {
            input,
            output,
            cache_read: input * 0.1,
            cache_write_5m: input * 1.25,
            cache_write_1h: input * 2.0,
        }
    }

    /// The long-context (> 200K prompt tokens) rates.
    fn long(self) -> Price {
        Price {
            input: self.input * 2.0,
            output: self.output * 1.5,
            cache_read: self.cache_read * 2.0,
            cache_write_5m: self.cache_write_5m * 2.0,
            cache_write_1h: self.cache_write_1h * 2.0,
        }
    }
}

/// (model id prefix, rates, whether it has long-context rates); the longest matching prefix
/// wins, so `claude-opus-4-1` is not priced as `claude-opus-4`.
const TABLE: &[(&str, Price, bool)] = &[
    ("claude-opus-4-5", Price::from_io(5.0, 25.0), false),
    ("claude-opus-4-6", Price::from_io(5.0, 25.0), true),
    ("claude-opus-4-7", Price::from_io(5.0, 25.0), true),
    ("claude-opus-4-8", Price::from_io(5.0, 25.0), true),
    ("claude-opus-4-1", Price::from_io(15.0, 75.0), false),
    ("claude-opus-4", Price::from_io(15.0, 75.0), false),
    ("claude-3-opus", Price::from_io(15.0, 75.0), false),
    ("claude-sonnet-4", Price::from_io(3.0, 15.0), true),
    ("claude-3-7-sonnet", Price::from_io(3.0, 15.0), false),
    ("claude-3-5-sonnet", Price::from_io(3.0, 15.0), false),
    ("claude-haiku-4-5", Price::from_io(1.0, 5.0), false),
    ("claude-3-5-haiku", Price::from_io(0.8, 4.0), false),
    ("claude-3-haiku", Price::from_io(0.25, 1.25), false),
];

/// The rates for `model` (a context suffix such as `[1m]` is ignored) in the standard or the
/// long-context tier; `None` for a model the table does not know.
pub fn price(model: &str, long_context: bool) -> Option<Price> {
    let bare = model.split('[').next().unwrap_or(model);
    let bare = bare.strip_prefix("anthropic.").unwrap_or(bare);
    let (_, p, has_long) = TABLE
        .iter()
        .filter(|(prefix, _, _)| bare.starts_with(prefix))
        .max_by_key(|(prefix, _, _)| prefix.len())?;
    Some(if long_context && *has_long {
        p.long()
    } else {
        *p
    })
}

/// Token sums to price: input, output, cache read, 5-minute and 1-hour cache writes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Priced {
    /// Input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Cache read tokens.
    pub cache_read: f64,
    /// 5-minute cache write tokens.
    pub cache_5m: f64,
    /// 1-hour cache write tokens.
    pub cache_1h: f64,
}

/// [`estimate`] over token sums in the order the store's ledger keeps them (input, output,
/// cache read, 5m writes, 1h writes): the report and the budgets price transcript-only
/// requests with this one function, so both say the same spend.
pub fn estimate_parts(model: &str, long_context: bool, t: [f64; 5]) -> Option<f64> {
    estimate(
        model,
        long_context,
        &Priced {
            input: t[0],
            output: t[1],
            cache_read: t[2],
            cache_5m: t[3],
            cache_1h: t[4],
        },
    )
}

/// The estimated cost in USD; `None` when the model is not in the table.
pub fn estimate(model: &str, long_context: bool, t: &Priced) -> Option<f64> {
    let p = price(model, long_context)?;
    Some(
        (t.input * p.input
            + t.output * p.output
            + t.cache_read * p.cache_read
            + t.cache_5m * p.cache_write_5m
            + t.cache_1h * p.cache_write_1h)
            / 1e6,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_match_what_claude_charged_for_the_tested_models() {
        // 101 in / 23 out / 13 cache read / 7 cache write: claude 2.1.197's own cost_usd.
        let t = Priced {
            input: 101.0,
            output: 23.0,
            cache_read: 13.0,
            cache_5m: 7.0,
            cache_1h: 0.0,
        };
        for (model, claude) in [
            ("claude-opus-4-8", 0.00113025),
            ("claude-sonnet-4-6", 0.00067815),
            ("claude-haiku-4-5", 0.00022605),
        ] {
            let e = estimate(model, false, &t).unwrap();
            assert!((e - claude).abs() < 1e-12, "{model}: {e} vs {claude}");
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_long_context_doubles_input() {
        assert_eq!(
            price("claude-opus-4-1-20250805", false).unwrap().input,
            15.0
        );
        assert_eq!(price("claude-opus-4-5-20251101", false).unwrap().input, 5.0);
        let long = price("claude-sonnet-4-5-20250929[1m]", true).unwrap();
        assert_eq!((long.input, long.output), (6.0, 22.5));
        assert_eq!(price("claude-haiku-4-5", true).unwrap().input, 1.0);
        assert_eq!(price("gpt-4", false), None);
    }
}
