//! `claude-telemetry report`: what the store knows about spending and output, in the terminal
//! or as JSON, with no collector, Prometheus or Grafana needed.
//!
//! The report only reads: it never blocks running launchers (WAL readers do not take the
//! write lock) and it never prints prompt text, which the usage tables do not hold.

mod budget;
pub mod check;
pub mod figures;
pub use budget::BudgetLine;
mod render;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

use crate::store::ledger;
use crate::store::queries::{self, Filter, GroupBy, Zone};

/// Arguments of `claude-telemetry report`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReportArgs {
    /// Break the figures down by this dimension, one table row per bucket.
    #[arg(long, value_enum, value_name = "DIMENSION")]
    pub by: Option<GroupBy>,
    /// Only usage from this time on: a date (YYYY-MM-DD, start of that day) or an age
    /// such as 24h, 7d or 2w.
    #[arg(long, value_name = "WHEN", value_parser = parse_time_spec)]
    pub since: Option<TimeSpec>,
    /// Only usage before this time: a date (YYYY-MM-DD, that day included) or an age
    /// such as 24h, 7d or 2w.
    #[arg(long, value_name = "WHEN", value_parser = parse_time_spec)]
    pub until: Option<TimeSpec>,
    /// Only this project (the `project` attribute).
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
    /// Print JSON (stable schema, `schema_version` 1) instead of tables.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the breakdown (or the total) as CSV, with a Total row.
    #[arg(long)]
    pub csv: bool,
    /// Compare, per day and session, what telemetry saw with what transcripts hold, and name
    /// the gaps (import transcripts first: `claude-telemetry import`).
    #[arg(long, conflicts_with = "csv")]
    pub check: bool,
    /// Cut days, weeks and months in UTC instead of the local time zone.
    #[arg(long)]
    pub utc: bool,
    /// Table width in columns (default: the terminal's; unlimited when not a terminal).
    /// Columns that do not fit are left out, least important first.
    #[arg(long, value_name = "COLUMNS")]
    pub width: Option<u16>,
}

/// A `--since`/`--until` value as typed; resolved against the clock and zone at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSpec {
    /// A calendar date, `YYYY-MM-DD`.
    Date(String),
    /// That long before now.
    Ago(Duration),
}

/// Parses `YYYY-MM-DD` or `<n>h|d|w`; the error names the accepted forms.
pub fn parse_time_spec(s: &str) -> Result<TimeSpec, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is neither a date (YYYY-MM-DD) nor an age like 24h, 7d or 2w");
    if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        return Ok(TimeSpec::Date(s.to_owned()));
    }
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    Ok(TimeSpec::Ago(Duration::from_secs(n.saturating_mul(secs))))
}

/// Everything the report shows, the unit of both the text and the JSON output.
#[derive(Debug, Clone, Serialize)]
struct Report {
    schema_version: u32,
    empty: bool,
    zone: Zone,
    filter: FilterOut,
    summary: render::Figures,
    breakdown: Option<Breakdown>,
    /// Spend against each configured budget now (absent without `[budget]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    budgets: Option<Vec<BudgetLine>>,
}

#[derive(Debug, Clone, Serialize)]
struct FilterOut {
    since: Option<i64>,
    until: Option<i64>,
    project: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Breakdown {
    by: GroupBy,
    rows: Vec<render::Row>,
}

/// Runs the report over the store at `db_path`, writing tables or JSON to `out`.
/// A missing or empty store is not an error: it prints a short explanation.
#[allow(dead_code)] // callers without budgets (the report's tests)
pub fn run(args: &ReportArgs, db_path: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    run_with_budgets(args, db_path, &[], out)
}

/// [`run`], plus spend against the configured budgets (computed by the caller).
pub fn run_with_budgets(
    args: &ReportArgs,
    db_path: &Path,
    budgets: &[BudgetLine],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let budgets_out = (!budgets.is_empty()).then(|| budgets.to_vec());
    let zone = if args.utc { Zone::Utc } else { Zone::Local };
    let conn = crate::store::open_reader(db_path)
        .with_context(|| format!("cannot open the store at {}", db_path.display()))?;
    let has_usage = match &conn {
        Some(conn) => queries::has_usage(conn)?,
        None => false,
    };
    let Some(conn) = conn.filter(|_| has_usage) else {
        if args.json {
            let report = Report {
                schema_version: 1,
                empty: true,
                zone,
                filter: FilterOut {
                    since: None,
                    until: None,
                    project: args.project.clone(),
                },
                summary: render::Figures::from_totals(&Default::default()),
                breakdown: args.by.map(|by| Breakdown {
                    by,
                    rows: Vec::new(),
                }),
                budgets: budgets_out,
            };
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "No usage recorded yet in {}.\nRun claude through claude-telemetry \
                 (with [store] enabled) and the report will fill in.",
                db_path.display()
            )?;
        }
        return Ok(());
    };

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let filter = Filter {
        since: resolve(&conn, args.since.as_ref(), zone, now, 0, "--since")?,
        until: resolve(&conn, args.until.as_ref(), zone, now, 1, "--until")?,
        project: args.project.clone(),
    };
    if args.check {
        return check::run(&conn, &filter, zone, args.json, out);
    }
    let totals = queries::totals(&conn, &filter)?;
    let ledger_total = ledger::ledger_groups(
        &conn,
        &filter,
        None,
        zone,
        &crate::history::prices::estimate_parts,
    )?
    .into_iter()
    .next()
    .map(|g| g.sums);
    let summary = render::Figures::combined(&totals, ledger_total.as_ref());
    let breakdown = match args.by {
        Some(by) => Some(Breakdown {
            by,
            rows: breakdown_rows(&conn, &filter, by, zone)?,
        }),
        None => None,
    };
    let mut report = Report {
        schema_version: 1,
        empty: false,
        zone,
        filter: FilterOut {
            since: filter.since,
            until: filter.until,
            project: filter.project.clone(),
        },
        summary,
        breakdown,
        budgets: budgets_out,
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    // The Total row: the summary, or for branches (the ledger alone) the ledger's total.
    let total = match (args.by, &ledger_total) {
        (Some(GroupBy::Branch), Some(l)) => render::Figures::from_ledger(l),
        _ => report.summary.clone(),
    };
    let total_row = render::Row::new("Total".to_owned(), 0, String::new(), total);
    // Moved, not copied: 25,000 session rows are megabytes.
    let mut rows = report
        .breakdown
        .as_mut()
        .map(|b| std::mem::take(&mut b.rows))
        .unwrap_or_default();
    if args.csv {
        rows.push(total_row);
        return render::csv(args.by, &rows, out);
    }
    if !rows.is_empty() {
        rows.push(total_row);
    }
    let span = queries::usage_span(&conn, &filter)?;
    let header = render::header(&conn, &filter, span, zone)?;
    render::text(
        &report.summary,
        report.breakdown.as_ref().map(|b| (b.by, rows.as_slice())),
        &header,
        args.width,
        out,
    )?;
    budget::text(budgets, out)?;
    Ok(())
}

/// Breakdown rows: telemetry's buckets plus what only transcripts saw in each (buckets only
/// transcripts know are added), or for `branch` the ledger alone; ordered as the dimension is.
fn breakdown_rows(
    conn: &rusqlite::Connection,
    filter: &Filter,
    by: GroupBy,
    zone: Zone,
) -> anyhow::Result<Vec<render::Row>> {
    let mut ledger: std::collections::HashMap<String, ledger::LedgerGroup> = ledger::ledger_groups(
        conn,
        filter,
        Some(by),
        zone,
        &crate::history::prices::estimate_parts,
    )?
    .into_iter()
    .map(|g| (g.key.clone(), g))
    .collect();
    // Only the session table shows when a row started; sessions start in far fewer distinct
    // hours than there are sessions, and each local-time conversion is a libc `localtime`.
    let mut started_texts: std::collections::HashMap<i64, String> = Default::default();
    let mut started = |hour: i64| -> anyhow::Result<String> {
        if by != GroupBy::Session {
            return Ok(String::new());
        }
        if let Some(text) = started_texts.get(&hour) {
            return Ok(text.clone());
        }
        let text = queries::format_time(conn, hour, zone)?;
        started_texts.insert(hour, text.clone());
        Ok(text)
    };
    let mut rows = Vec::new();
    if by != GroupBy::Branch {
        for g in queries::breakdown(conn, filter, by, zone)? {
            let l = ledger.remove(&g.key);
            let first = l
                .as_ref()
                .map_or(g.first_hour, |l| l.first_hour.min(g.first_hour));
            let figures = render::Figures::combined(&g.totals, l.as_ref().map(|l| &l.sums));
            rows.push(render::Row::new(g.key, first, started(first)?, figures));
        }
    }
    for (_, l) in ledger {
        let figures = if by == GroupBy::Branch {
            render::Figures::from_ledger(&l.sums)
        } else {
            if l.sums.transcript_only <= 0.0 {
                continue;
            }
            render::Figures::combined(&Default::default(), Some(&l.sums))
        };
        let started = started(l.first_hour)?;
        rows.push(render::Row::new(l.key, l.first_hour, started, figures));
    }
    match by {
        GroupBy::Day | GroupBy::Week | GroupBy::Month => rows.sort_by(|a, b| a.key().cmp(b.key())),
        GroupBy::Session => {
            rows.sort_by(|a, b| (a.first_hour(), a.key()).cmp(&(b.first_hour(), b.key())))
        }
        GroupBy::Model | GroupBy::Project | GroupBy::Branch => rows.sort_by(|a, b| {
            b.cost()
                .total_cmp(&a.cost())
                .then_with(|| a.key().cmp(b.key()))
        }),
    }
    Ok(rows)
}

/// Turns a time spec into Unix seconds. Dates are midnights in `zone`; an `--until` date
/// (`days_after` = 1) means the end of that day.
fn resolve(
    conn: &rusqlite::Connection,
    spec: Option<&TimeSpec>,
    zone: Zone,
    now: i64,
    days_after: i64,
    flag: &str,
) -> anyhow::Result<Option<i64>> {
    Ok(match spec {
        None => None,
        Some(TimeSpec::Ago(d)) => Some(now.saturating_sub(d.as_secs() as i64)),
        Some(TimeSpec::Date(date)) => Some(
            queries::date_start(conn, date, zone, days_after)?
                .with_context(|| format!("{flag} {date}: not a valid date (YYYY-MM-DD)"))?,
        ),
    })
}

#[cfg(test)]
mod tests;
/// Helpers the report's test modules share.
#[cfg(test)]
mod tests_support {
    use std::path::Path;

    use clap::Parser;

    use super::{ReportArgs, run};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReportArgs,
    }

    /// Runs the report with `argv` (as typed after `report`) and returns its output.
    pub(super) fn report(db: &Path, argv: &[&str]) -> String {
        let cli = Cli::try_parse_from(std::iter::once("report").chain(argv.iter().copied()))
            .expect("arguments parse");
        let mut out = Vec::new();
        run(&cli.args, db, &mut out).expect("report runs");
        String::from_utf8(out).expect("utf-8 output")
    }

    /// Runs the report with `argv` plus `--json` and parses the output.
    pub(super) fn report_json(db: &Path, argv: &[&str]) -> serde_json::Value {
        let mut argv = argv.to_vec();
        argv.push("--json");
        serde_json::from_str(&report(db, &argv)).expect("valid JSON")
    }
}
