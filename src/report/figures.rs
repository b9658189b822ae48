//! The derived figures the report prints, over store totals. The formulas the dashboards
//! share (cache efficiency, cost per 1K output tokens) are `crate::definitions`' own
//! functions, called here, so the terminal and Grafana cannot drift apart.
//!
//! Sources (one per figure, so nothing is counted twice):
//! - **cost** — `claude_code.cost.usage` metric points (USD); Prometheus/Grafana sum the same
//!   points. `api_request.cost_usd` events carry the same per-request figure and are kept only
//!   as a cross-check (`events` in `report --json`).
//! - **tokens by type** — `claude_code.token.usage{type=input|output|cacheRead|cacheCreation}`.
//! - **sessions** — distinct `session.id` values seen, as the dashboards count them
//!   (`count(count by (session_id)(…))`); `claude_code.session.count` is also summed, as
//!   `sessions_started`.
//! - **lines, commits, PRs, active time** — their `claude_code.*` metrics.
//! - **API requests, errors, request duration, prompts** — `api_request`, `api_error`,
//!   `user_prompt` events (no metric exists).
//! - **tool accept/reject** — `tool_decision` events (`decision=accept|reject`): they cover
//!   every tool; the `code_edit_tool.decision` metric covers edit tools only and is reported
//!   separately as edit decisions.

use crate::definitions;
use crate::store::queries::Totals;

/// Cache efficiency (hit ratio): the share of prompt tokens served from the cache,
/// `cacheRead / (cacheRead + input + cacheCreation)`. `None` when no prompt tokens were used.
pub fn cache_hit_ratio(t: &Totals) -> Option<f64> {
    definitions::cache_efficiency(t.input_tokens, t.cache_read_tokens, t.cache_creation_tokens)
}

/// Every token billed, all four types.
pub fn total_tokens(t: &Totals) -> f64 {
    t.input_tokens + t.output_tokens + t.cache_read_tokens + t.cache_creation_tokens
}

/// Cost per 1,000 output tokens (USD): `cost / output * 1000`, what a unit of produced text
/// costs once input and cache are paid for. `None` without output tokens.
pub fn cost_per_1k_output(t: &Totals) -> Option<f64> {
    definitions::cost_per_1k_output_tokens(t.cost_usd, t.output_tokens)
}

/// Share of `tool_decision` events that accepted: `accepts / (accepts + rejects)`.
pub fn tool_accept_ratio(t: &Totals) -> Option<f64> {
    ratio(t.tool_accepts, t.tool_accepts + t.tool_rejects)
}

/// Mean API request duration in milliseconds, from `api_request.duration_ms`.
pub fn mean_api_duration_ms(t: &Totals) -> Option<f64> {
    ratio(t.api_duration_ms, t.api_requests)
}

/// Active time in seconds, user (typing, reading) plus CLI (claude working).
pub fn active_total_s(t: &Totals) -> f64 {
    t.active_user_s + t.active_cli_s
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_hit_ratio_counts_cache_creation_in_the_denominator() {
        let t = Totals {
            input_tokens: 100.0,
            cache_read_tokens: 700.0,
            cache_creation_tokens: 200.0,
            output_tokens: 5000.0,
            ..Totals::default()
        };
        assert_eq!(cache_hit_ratio(&t), Some(0.7));
        assert_eq!(total_tokens(&t), 6000.0);
    }

    #[test]
    fn ratios_are_undefined_without_a_denominator() {
        let t = Totals {
            cost_usd: 1.0,
            ..Totals::default()
        };
        assert_eq!(cache_hit_ratio(&t), None);
        assert_eq!(cost_per_1k_output(&t), None);
        assert_eq!(tool_accept_ratio(&t), None);
        assert_eq!(mean_api_duration_ms(&t), None);
    }

    #[test]
    fn cost_per_1k_output_scales_to_a_thousand_tokens() {
        let t = Totals {
            cost_usd: 0.5,
            output_tokens: 2000.0,
            ..Totals::default()
        };
        assert_eq!(cost_per_1k_output(&t), Some(0.25));
    }
}
