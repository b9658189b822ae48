//! Figures as the report shows them: the JSON shape and the terminal tables.

use std::io::Write;

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};
use rusqlite::Connection;
use serde::Serialize;

use super::figures;
use crate::history::prices::PRICE_TABLE_VERSION;
use crate::store::ledger::LedgerSums;
use crate::store::queries::{self, Filter, GroupBy, Totals, Zone};

/// The figures of a summary or of one breakdown row (JSON field names are the schema).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Figures {
    /// Distinct sessions with any usage (the dashboards' definition).
    sessions: u64,
    /// Sessions started (`claude_code.session.count`); differs from `sessions` when a
    /// session spans buckets or when the start fell outside the range.
    sessions_started: u64,
    cost_usd: f64,
    cost_per_1k_output_usd: Option<f64>,
    tokens: Tokens,
    cache_hit_ratio: Option<f64>,
    lines: Lines,
    commits: u64,
    pull_requests: u64,
    active_time_s: Active,
    api: Api,
    prompts: u64,
    tools: Tools,
    edit_decisions: Decisions,
    /// Sums of `api_request` event fields, kept to cross-check the metric-based totals.
    events: EventSums,
    /// The part of `cost_usd` estimated from the price table (requests seen only in
    /// transcripts, where claude reported no cost); 0 when all of it is claude's own.
    cost_estimated_usd: f64,
    /// `telemetry` (all of the cost is claude's own), `estimated` or `mixed`.
    cost_basis: &'static str,
    /// The embedded price table estimates come from.
    price_table: &'static str,
    /// Requests seen only in transcripts whose model the price table does not know (their
    /// cost is missing from `cost_usd`).
    unpriced_requests: u64,
    /// The request ledger's provenance counts: each request once, by who saw it.
    requests_by_source: Sources,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Sources {
    telemetry: u64,
    transcript: u64,
    both: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Tokens {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
    total: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Lines {
    added: u64,
    removed: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Active {
    user: f64,
    cli: f64,
    total: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Api {
    requests: u64,
    errors: u64,
    mean_duration_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Tools {
    accepts: u64,
    rejects: u64,
    accept_ratio: Option<f64>,
    runs: u64,
    failures: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Decisions {
    accepts: u64,
    rejects: u64,
}

#[derive(Debug, Clone, Serialize)]
struct EventSums {
    cost_usd: f64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_creation_tokens: u64,
    /// The 5-minute part of `cache_creation_tokens` (claude 2.1.332+; null when no request in
    /// range reported the split). Not added to any total: it is inside `cache_creation_tokens`.
    cache_creation_5m_tokens: Option<u64>,
    /// The 1-hour part of `cache_creation_tokens`, as above.
    cache_creation_1h_tokens: Option<u64>,
}

/// Counts are sums of whole numbers held as doubles; rounding only removes float noise.
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

impl Figures {
    pub(super) fn from_totals(t: &Totals) -> Figures {
        Figures {
            sessions: count(t.sessions),
            sessions_started: count(t.sessions_started),
            cost_usd: t.cost_usd,
            cost_per_1k_output_usd: figures::cost_per_1k_output(t),
            tokens: Tokens {
                input: count(t.input_tokens),
                output: count(t.output_tokens),
                cache_read: count(t.cache_read_tokens),
                cache_creation: count(t.cache_creation_tokens),
                total: count(figures::total_tokens(t)),
            },
            cache_hit_ratio: figures::cache_hit_ratio(t),
            lines: Lines {
                added: count(t.lines_added),
                removed: count(t.lines_removed),
            },
            commits: count(t.commits),
            pull_requests: count(t.pull_requests),
            active_time_s: Active {
                user: t.active_user_s,
                cli: t.active_cli_s,
                total: figures::active_total_s(t),
            },
            api: Api {
                requests: count(t.api_requests),
                errors: count(t.api_errors),
                mean_duration_ms: figures::mean_api_duration_ms(t),
            },
            prompts: count(t.prompts),
            tools: Tools {
                accepts: count(t.tool_accepts),
                rejects: count(t.tool_rejects),
                accept_ratio: figures::tool_accept_ratio(t),
                runs: count(t.tool_runs),
                failures: count(t.tool_failures),
            },
            edit_decisions: Decisions {
                accepts: count(t.edit_accepts),
                rejects: count(t.edit_rejects),
            },
            events: EventSums {
                cost_usd: t.api_cost_usd,
                input_tokens: count(t.api_input_tokens),
                output_tokens: count(t.api_output_tokens),
                cache_read_tokens: count(t.api_cache_read_tokens),
                cache_creation_tokens: count(t.api_cache_creation_tokens),
                cache_creation_5m_tokens: (t.api_cache_split_requests > 0.0)
                    .then(|| count(t.api_cache_creation_5m_tokens)),
                cache_creation_1h_tokens: (t.api_cache_split_requests > 0.0)
                    .then(|| count(t.api_cache_creation_1h_tokens)),
            },
            cost_estimated_usd: 0.0,
            cost_basis: "telemetry",
            price_table: PRICE_TABLE_VERSION,
            unpriced_requests: 0,
            requests_by_source: Sources::default(),
        }
    }

    /// Telemetry's figures plus the requests only transcripts saw (each request once).
    pub(super) fn combined(t: &Totals, ledger: Option<&LedgerSums>) -> Figures {
        let Some(l) = ledger else {
            return Figures::from_totals(t);
        };
        let telemetry = *t;
        let mut t = *t;
        t.sessions += l.sessions_only_in_transcripts;
        t.api_requests += l.transcript_only;
        t.input_tokens += l.transcript_tokens[0];
        t.output_tokens += l.transcript_tokens[1];
        t.cache_read_tokens += l.transcript_tokens[2];
        t.cache_creation_tokens += l.transcript_tokens[3];
        t.cost_usd += l.estimated_cost_usd;
        let mut f = Figures::from_totals(&t);
        // Transcripts record no duration: the mean stays over the requests telemetry timed.
        f.api.mean_duration_ms = figures::mean_api_duration_ms(&telemetry);
        f.mark(l, t.cost_usd);
        f
    }

    /// The ledger alone (the `--by branch` view: telemetry's metrics carry no branch).
    pub(super) fn from_ledger(l: &LedgerSums) -> Figures {
        let t = Totals {
            sessions: l.sessions,
            cost_usd: l.known_cost_usd + l.estimated_cost_usd,
            input_tokens: l.tokens[0],
            output_tokens: l.tokens[1],
            cache_read_tokens: l.tokens[2],
            cache_creation_tokens: l.tokens[3],
            api_requests: l.requests,
            ..Totals::default()
        };
        let mut f = Figures::from_totals(&t);
        f.mark(l, t.cost_usd);
        f
    }

    fn mark(&mut self, l: &LedgerSums, cost: f64) {
        self.cost_estimated_usd = l.estimated_cost_usd;
        self.cost_basis = if l.estimated_cost_usd <= 0.0 {
            "telemetry"
        } else if l.estimated_cost_usd >= cost {
            "estimated"
        } else {
            "mixed"
        };
        self.unpriced_requests = count(l.unpriced_requests);
        self.requests_by_source = Sources {
            telemetry: count(l.telemetry_only),
            transcript: count(l.transcript_only),
            both: count(l.both),
        };
    }
}

/// One breakdown row.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Row {
    /// Bucket key; '' when the rows carried no value for the dimension.
    key: String,
    /// Start of the first hour with data in the bucket (Unix seconds).
    first_hour: i64,
    /// `first_hour` as text in the report's zone (text output only).
    #[serde(skip)]
    started: String,
    #[serde(flatten)]
    figures: Figures,
}

impl Row {
    pub(super) fn new(key: String, first_hour: i64, started: String, figures: Figures) -> Row {
        Row {
            key,
            first_hour,
            started,
            figures,
        }
    }

    /// The bucket's cost, for ordering.
    pub(super) fn cost(&self) -> f64 {
        self.figures.cost_usd
    }

    /// The bucket key.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// Start of the bucket's first hour.
    pub(super) fn first_hour(&self) -> i64 {
        self.first_hour
    }
}

/// The line above the tables: the period covered and the filters applied.
pub(super) fn header(
    conn: &Connection,
    filter: &Filter,
    span: Option<(i64, i64)>,
    zone: Zone,
) -> anyhow::Result<String> {
    let zone_name = match zone {
        Zone::Utc => "UTC",
        Zone::Local => "local time",
    };
    let mut h = match span {
        Some((first, last)) => format!(
            "Claude Code usage, {} - {} {zone_name}",
            queries::format_time(conn, first, zone)?,
            queries::format_time(conn, last + 3600, zone)?
        ),
        None => "Claude Code usage: nothing in this range".to_owned(),
    };
    if let Some(p) = &filter.project {
        h.push_str(&format!(
            ", project {}",
            if p.is_empty() { "(none)" } else { p }
        ));
    }
    Ok(h)
}

/// Writes the summary table and, when asked, the breakdown table.
pub(super) fn text(
    summary: &Figures,
    breakdown: Option<(GroupBy, &[Row])>,
    header: &str,
    width: Option<u16>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // An explicit width wins; otherwise the terminal's, when stdout is one.
    let width = width.or_else(|| Table::new().width());
    writeln!(out, "{header}")?;
    writeln!(out, "{}", summary_table(summary, width))?;
    if let Some((by, rows)) = breakdown {
        writeln!(out)?;
        if rows.is_empty() {
            writeln!(out, "No rows for this breakdown.")?;
        } else {
            write_breakdown(by, rows, width, out)?;
            if rows.iter().any(|r| r.figures.cost_estimated_usd > 0.0) {
                writeln!(
                    out,
                    "* partly estimated from the price table ({PRICE_TABLE_VERSION}): requests \
                     seen only in transcripts, where claude reported no cost"
                )?;
            }
        }
    }
    Ok(())
}

/// The breakdown rows (or, without `--by`, the total alone) as CSV, a header first.
pub(super) fn csv(by: Option<GroupBy>, rows: &[Row], out: &mut dyn Write) -> anyhow::Result<()> {
    let key = by.map_or("range", |b| match b {
        GroupBy::Day => "day",
        GroupBy::Week => "week",
        GroupBy::Month => "month",
        GroupBy::Session => "session",
        GroupBy::Model => "model",
        GroupBy::Project => "project",
        GroupBy::Branch => "branch",
    });
    writeln!(
        out,
        "{key},sessions,requests,cost_usd,cost_estimated_usd,input_tokens,output_tokens,\
         cache_read_tokens,cache_creation_tokens,total_tokens,requests_telemetry_only,\
         requests_transcript_only,requests_both"
    )?;
    for r in rows {
        let f = &r.figures;
        writeln!(
            out,
            "{},{},{},{:.6},{:.6},{},{},{},{},{},{},{},{}",
            csv_field(&r.key),
            f.sessions,
            f.api.requests,
            f.cost_usd,
            f.cost_estimated_usd,
            f.tokens.input,
            f.tokens.output,
            f.tokens.cache_read,
            f.tokens.cache_creation,
            f.tokens.total,
            f.requests_by_source.telemetry,
            f.requests_by_source.transcript,
            f.requests_by_source.both
        )?;
    }
    Ok(())
}

/// RFC 4180 quoting where a field needs it.
fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

fn summary_table(f: &Figures, width: Option<u16>) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    if let Some(w) = width {
        t.set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(w);
    }
    let mut row = |label: &str, value: String| {
        t.add_row(vec![Cell::new(label), Cell::new(value)]);
    };
    row("Sessions", int(f.sessions));
    let per_1k = f
        .cost_per_1k_output_usd
        .map(|c| format!(" ({} per 1K output tokens)", money(c)))
        .unwrap_or_default();
    let estimated = if f.cost_estimated_usd > 0.0 {
        format!(
            "; {} of it estimated from the price table ({}) for requests seen only in transcripts",
            money(f.cost_estimated_usd),
            f.price_table
        )
    } else {
        String::new()
    };
    row("Cost", format!("{}{per_1k}{estimated}", money(f.cost_usd)));
    row(
        "Tokens",
        format!(
            "input {} · output {} · cache read {} · cache creation {} (total {})",
            int(f.tokens.input),
            int(f.tokens.output),
            int(f.tokens.cache_read),
            int(f.tokens.cache_creation),
            int(f.tokens.total)
        ),
    );
    row("Cache hit ratio", pct(f.cache_hit_ratio));
    let mean = f
        .api
        .mean_duration_ms
        .map(|ms| format!(", mean {:.1} s", ms / 1000.0))
        .unwrap_or_default();
    row(
        "API requests",
        format!(
            "{} ({} errors{mean})",
            int(f.api.requests),
            int(f.api.errors)
        ),
    );
    let s = &f.requests_by_source;
    if s.transcript + s.both + s.telemetry > 0 {
        row(
            "Seen by",
            format!(
                "telemetry and transcript {} · telemetry only {} · transcript only {}",
                int(s.both),
                int(s.telemetry),
                int(s.transcript)
            ),
        );
    }
    row("Prompts", int(f.prompts));
    row(
        "Lines of code",
        format!("+{} / -{}", int(f.lines.added), int(f.lines.removed)),
    );
    row("Commits", int(f.commits));
    row("Pull requests", int(f.pull_requests));
    row(
        "Active time",
        format!(
            "user {} · CLI {}",
            duration(f.active_time_s.user),
            duration(f.active_time_s.cli)
        ),
    );
    row(
        "Tool decisions",
        format!(
            "{} accepted · {} rejected ({} accepted)",
            int(f.tools.accepts),
            int(f.tools.rejects),
            pct(f.tools.accept_ratio)
        ),
    );
    row(
        "Tool runs",
        format!("{} ({} failed)", int(f.tools.runs), int(f.tools.failures)),
    );
    row(
        "Edit decisions",
        format!(
            "{} accepted · {} rejected",
            int(f.edit_decisions.accepts),
            int(f.edit_decisions.rejects)
        ),
    );
    t
}

/// A breakdown column: header, alignment, how important it is to keep, and its cell text.
struct Column {
    header: &'static str,
    keep: u8,
    cell: fn(&Row) -> String,
}

fn breakdown_columns(by: GroupBy) -> Vec<Column> {
    let key_header = match by {
        GroupBy::Day => "Day",
        GroupBy::Week => "Week of",
        GroupBy::Month => "Month",
        GroupBy::Session => "Session",
        GroupBy::Model => "Model",
        GroupBy::Project => "Project",
        GroupBy::Branch => "Branch",
    };
    let mut cols = vec![Column {
        header: key_header,
        keep: 255,
        cell: match by {
            GroupBy::Session => |r: &Row| match r.key.as_str() {
                "" => "(none)".to_owned(),
                k => k.chars().take(8).collect(),
            },
            GroupBy::Model => |r: &Row| match r.key.as_str() {
                "" => "(not per model)".to_owned(),
                k => k.to_owned(),
            },
            _ => |r: &Row| match r.key.as_str() {
                "" => "(none)".to_owned(),
                k => k.to_owned(),
            },
        },
    }];
    if by == GroupBy::Session {
        cols.push(Column {
            header: "Started",
            keep: 65,
            cell: |r| r.started.clone(),
        });
    }
    if by != GroupBy::Session {
        cols.push(Column {
            header: "Sessions",
            keep: 75,
            cell: |r| int(r.figures.sessions),
        });
    }
    cols.extend([
        Column {
            header: "Cost",
            keep: 250,
            // `*`: partly estimated from the price table (said under the table).
            cell: |r| {
                let star = if r.figures.cost_estimated_usd > 0.0 {
                    "*"
                } else {
                    ""
                };
                format!("{}{star}", money(r.figures.cost_usd))
            },
        },
        Column {
            header: "Input",
            keep: 80,
            cell: |r| compact(r.figures.tokens.input),
        },
        Column {
            header: "Output",
            keep: 85,
            cell: |r| compact(r.figures.tokens.output),
        },
        Column {
            header: "Cache read",
            keep: 60,
            cell: |r| compact(r.figures.tokens.cache_read),
        },
        Column {
            header: "Cache write",
            keep: 55,
            cell: |r| compact(r.figures.tokens.cache_creation),
        },
        Column {
            header: "Cache hit",
            keep: 90,
            cell: |r| pct(r.figures.cache_hit_ratio),
        },
        Column {
            header: "Requests",
            keep: 50,
            cell: |r| int(r.figures.api.requests),
        },
        Column {
            header: "Lines +/-",
            keep: 70,
            cell: |r| {
                format!(
                    "+{}/-{}",
                    compact(r.figures.lines.added),
                    compact(r.figures.lines.removed)
                )
            },
        },
        Column {
            header: "Commits",
            keep: 40,
            cell: |r| int(r.figures.commits),
        },
        Column {
            header: "PRs",
            keep: 35,
            cell: |r| int(r.figures.pull_requests),
        },
        Column {
            header: "Active",
            keep: 45,
            cell: |r| duration(r.figures.active_time_s.total),
        },
        Column {
            header: "Tools ok/no",
            keep: 30,
            cell: |r| {
                format!(
                    "{}/{}",
                    int(r.figures.tools.accepts),
                    int(r.figures.tools.rejects)
                )
            },
        },
    ]);
    cols
}

/// Writes the breakdown table, leaving out the least important columns until it fits.
///
/// Streamed, not built: 25,000 sessions are 350,000 cells, which a `comfy_table::Table` holds
/// all at once (with its rendering, again per width tried: 144 MiB and half a second at that
/// size). Column widths come from one pass over the rows, the lines from a second, each written
/// as it is made; the output is the `UTF8_FULL_CONDENSED` table comfy-table draws (the snapshot
/// tests hold both to the same text). Only when the key and cost alone are still too wide is
/// comfy-table asked to wrap them.
fn write_breakdown(
    by: GroupBy,
    rows: &[Row],
    width: Option<u16>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut cols = breakdown_columns(by);
    let mut widths: Vec<usize> = cols.iter().map(|c| text_width(c.header)).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(&cols) {
            *w = (*w).max(text_width(&(c.cell)(r)));
        }
    }
    // A line is its borders plus, per column, the content and one space either side.
    let line_width = |widths: &[usize]| 1 + widths.iter().map(|w| w + 3).sum::<usize>();
    loop {
        let fits = width.is_none_or(|w| line_width(&widths) <= usize::from(w));
        if fits {
            break;
        }
        let droppable = cols.iter().filter(|c| c.keep < 250).map(|c| c.keep).min();
        let Some(keep) = droppable else {
            // Only the key and cost are left: let comfy-table wrap them.
            let mut table = build_breakdown(&cols, rows);
            if let Some(w) = width {
                table
                    .set_content_arrangement(ContentArrangement::Dynamic)
                    .set_width(w);
            }
            writeln!(out, "{table}")?;
            return Ok(());
        };
        let mut i = 0;
        cols.retain(|c| {
            let kept = c.keep != keep;
            if !kept {
                widths.remove(i);
            } else {
                i += 1;
            }
            kept
        });
    }
    let rule = |out: &mut dyn Write, [left, fill, join, right]: [char; 4]| -> std::io::Result<()> {
        let mut line = String::new();
        line.push(left);
        for (i, w) in widths.iter().enumerate() {
            if i > 0 {
                line.push(join);
            }
            line.extend(std::iter::repeat_n(fill, w + 2));
        }
        line.push(right);
        writeln!(out, "{line}")
    };
    let cells = |out: &mut dyn Write, texts: &mut dyn Iterator<Item = String>| {
        let mut line = String::from("│");
        for (i, (text, w)) in texts.zip(&widths).enumerate() {
            if i > 0 {
                line.push('┆');
            }
            let pad = w.saturating_sub(text_width(&text));
            line.push(' ');
            // The key column reads left to right, the figures line up on the right.
            if i == 0 {
                line.push_str(&text);
                line.extend(std::iter::repeat_n(' ', pad));
            } else {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(&text);
            }
            line.push(' ');
        }
        line.push('│');
        writeln!(out, "{line}")
    };
    rule(out, ['┌', '─', '┬', '┐'])?;
    cells(out, &mut cols.iter().map(|c| c.header.to_owned()))?;
    rule(out, ['╞', '═', '╪', '╡'])?;
    for r in rows {
        cells(out, &mut cols.iter().map(|c| (c.cell)(r)))?;
    }
    rule(out, ['└', '─', '┴', '┘'])?;
    Ok(())
}

/// The breakdown as a comfy-table, for the narrow case where it has to wrap cells.
fn build_breakdown(cols: &[Column], rows: &[Row]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t.set_header(cols.iter().map(|c| Cell::new(c.header)));
    for r in rows {
        t.add_row(cols.iter().map(|c| Cell::new((c.cell)(r))));
    }
    for i in 1..cols.len() {
        if let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Columns a text takes in a terminal, as comfy-table measures cells.
fn text_width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// 1234567 → "1,234,567".
pub(super) fn int(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Short form for narrow columns: exact below 10,000, then 12.3K, 4.56M, 7.89B.
pub(super) fn compact(v: u64) -> String {
    let f = v as f64;
    match v {
        0..10_000 => int(v),
        10_000..1_000_000 => format!("{:.1}K", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", f / 1e6),
        _ => format!("{:.2}B", f / 1e9),
    }
}

/// Dollars: cents from $1 up, four decimals below (single requests cost fractions of a cent).
pub(super) fn money(v: f64) -> String {
    if v.abs() >= 1.0 {
        let cents = (v * 100.0).round() as u64;
        format!("${}.{:02}", int(cents / 100), cents % 100)
    } else {
        format!("${v:.4}")
    }
}

/// A ratio as a percentage with one decimal; "-" when undefined.
pub(super) fn pct(v: Option<f64>) -> String {
    v.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".to_owned())
}

/// Seconds as "2h 05m", "3m 20s" or "45s".
pub(super) fn duration(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs.round() as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}
