//! The report's budget section: spend against each `[budget]` limit now (the same standings
//! the launch line and the status line show), whatever `--since`/`--by` select.

use std::io::Write;

use crate::budget::{Level, Standings};

/// Writes `Budgets (local time, now)` and one row per limit; nothing when none is configured.
pub(super) fn text(standings: &Standings, out: &mut dyn Write) -> std::io::Result<()> {
    if standings.0.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nBudgets (local calendar periods, now)")?;
    for s in &standings.0 {
        let state = match s.level() {
            Level::Under => "under",
            Level::Near => "NEAR",
            Level::Over => "OVER",
        };
        writeln!(out, "  {state:5}  {s}")?;
    }
    Ok(())
}
