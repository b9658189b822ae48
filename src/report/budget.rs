//! The report's budget section: spend against each `[budget]` limit now (the same standings
//! the launch line and the status line show), whatever `--since`/`--by` select. The caller
//! computes them (`crate::budget`), so the report keeps reading the store only.

use std::io::Write;

use serde::Serialize;

/// One limit's standing as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct BudgetLine {
    /// The JSON object under `budgets[]` (period, scope, limit_usd, spent_usd, since, level).
    pub json: serde_json::Value,
    /// The text row: `day $8.50 of $10 (85%)`.
    #[serde(skip)]
    pub text: String,
    /// `under`, `near` or `over`.
    #[serde(skip)]
    pub level: &'static str,
}

/// Writes `Budgets (...)` and one row per limit; nothing when none is configured.
pub(super) fn text(lines: &[BudgetLine], out: &mut dyn Write) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nBudgets (local calendar periods, now)")?;
    for line in lines {
        let state = match line.level {
            "under" => "under".to_owned(),
            other => other.to_uppercase(),
        };
        writeln!(out, "  {state:5}  {}", line.text)?;
    }
    Ok(())
}
