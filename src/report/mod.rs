//! `claude-telemetry report`: what the store knows about spending and output, in the terminal
//! or as JSON, with no collector, Prometheus or Grafana needed.
//!
//! The report only reads: it never blocks running launchers (WAL readers do not take the
//! write lock) and it never prints prompt text, which the usage tables do not hold.

mod budget;
pub mod figures;
pub use budget::BudgetLine;
mod render;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

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
    #[arg(long)]
    pub json: bool,
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
    let totals = queries::totals(&conn, &filter)?;
    let breakdown = match args.by {
        Some(by) => {
            let groups = queries::breakdown(&conn, &filter, by, zone)?;
            let rows = groups
                .iter()
                .map(|g| {
                    let started = queries::format_time(&conn, g.first_hour, zone)?;
                    Ok(render::Row::from_group(g, started))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(Breakdown { by, rows })
        }
        None => None,
    };
    let report = Report {
        schema_version: 1,
        empty: false,
        zone,
        filter: FilterOut {
            since: filter.since,
            until: filter.until,
            project: filter.project.clone(),
        },
        summary: render::Figures::from_totals(&totals),
        breakdown,
        budgets: budgets_out,
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    let span = queries::usage_span(&conn, &filter)?;
    let header = render::header(&conn, &filter, span, zone)?;
    render::text(
        &report.summary,
        report.breakdown.as_ref().map(|b| (b.by, b.rows.as_slice())),
        &header,
        args.width,
        out,
    )?;
    budget::text(budgets, out)?;
    Ok(())
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
