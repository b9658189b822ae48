//! `report --check`: telemetry against transcripts, per day and session, from the request
//! ledger. A request telemetry saw and a transcript holds is `both`; the gaps are the
//! requests only one source saw, named per day ("2026-11-30, 3 sessions, 41 requests seen
//! only in transcripts"), then per session. Totals count every request once.
//!
//! Expected gaps: claude writes its main-loop calls to the transcript, not auxiliary ones
//! (session titles), so those are telemetry-only; transcripts deleted by claude's cleanup (or
//! never imported) leave telemetry-only requests; sessions run without the launcher, or whose
//! telemetry was lost, are transcript-only.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::store::ledger::{self, CheckRow};
use crate::store::queries::{Filter, Zone};

/// One day's gap of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Calendar day.
    pub day: String,
    /// `transcript` (telemetry missed them) or `telemetry` (no transcript holds them).
    pub seen_only_in: &'static str,
    /// Sessions with such requests that day.
    pub sessions: u64,
    /// Such requests that day.
    pub requests: u64,
}

/// What `--check` finds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Check {
    /// Requests in range, each once.
    pub requests: u64,
    /// Seen by both sources.
    pub both: u64,
    /// Seen only by telemetry.
    pub telemetry_only: u64,
    /// Seen only in transcripts.
    pub transcript_only: u64,
    /// Per day, the gaps.
    pub gaps: Vec<Gap>,
    /// Per day and session, every row with a gap.
    pub sessions: Vec<CheckRow>,
}

/// Computes the check over the ledger.
pub fn compute(conn: &rusqlite::Connection, filter: &Filter, zone: Zone) -> anyhow::Result<Check> {
    let rows = ledger::check_rows(conn, filter, zone)?;
    let mut c = Check::default();
    let mut days: BTreeMap<(String, &'static str), (u64, u64)> = BTreeMap::new();
    for r in &rows {
        c.both += r.both;
        c.telemetry_only += r.telemetry_only;
        c.transcript_only += r.transcript_only;
        for (kind, n) in [
            ("transcript", r.transcript_only),
            ("telemetry", r.telemetry_only),
        ] {
            if n > 0 {
                let e = days.entry((r.day.clone(), kind)).or_default();
                e.0 += 1;
                e.1 += n;
            }
        }
    }
    c.requests = c.both + c.telemetry_only + c.transcript_only;
    c.gaps = days
        .into_iter()
        .map(|((day, kind), (sessions, requests))| Gap {
            day,
            seen_only_in: kind,
            sessions,
            requests,
        })
        .collect();
    c.sessions = rows
        .into_iter()
        .filter(|r| r.telemetry_only + r.transcript_only > 0)
        .collect();
    Ok(c)
}

/// One line for `doctor`: the totals and the number of days with gaps.
pub fn one_line(c: &Check) -> String {
    if c.requests == 0 {
        return "no requests in the ledger yet (run claude through the launcher, or `claude-telemetry import`)".to_owned();
    }
    let transcript_days = c
        .gaps
        .iter()
        .filter(|g| g.seen_only_in == "transcript")
        .count();
    format!(
        "{} request(s): {} seen by telemetry and transcripts, {} only by telemetry, {} only in \
         transcripts ({} day(s) where telemetry missed requests; `report --check` names them)",
        c.requests, c.both, c.telemetry_only, c.transcript_only, transcript_days
    )
}

/// Prints the check as text or JSON.
pub fn run(
    conn: &rusqlite::Connection,
    filter: &Filter,
    zone: Zone,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let c = compute(conn, filter, zone)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &c)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} request(s), each counted once: {} seen by telemetry and in transcripts, {} only by \
         telemetry, {} only in transcripts.",
        c.requests, c.both, c.telemetry_only, c.transcript_only
    )?;
    if c.gaps.is_empty() {
        writeln!(out, "No gaps: every request was seen by both sources.")?;
        return Ok(());
    }
    writeln!(out, "Gaps by day:")?;
    for g in &c.gaps {
        let why = match g.seen_only_in {
            "transcript" => "seen only in transcripts (telemetry missed them)",
            _ => {
                "seen only by telemetry (no transcript holds them: auxiliary calls, or transcripts deleted or not imported)"
            }
        };
        writeln!(
            out,
            "  {}, {} session{}, {} request{} {why}",
            g.day,
            g.sessions,
            if g.sessions == 1 { "" } else { "s" },
            g.requests,
            if g.requests == 1 { "" } else { "s" },
        )?;
    }
    writeln!(out, "By session:")?;
    for r in &c.sessions {
        let session = if r.session.is_empty() {
            "(none)"
        } else {
            &r.session
        };
        writeln!(
            out,
            "  {} {session}: {} only in transcripts, {} only by telemetry, {} both",
            r.day, r.transcript_only, r.telemetry_only, r.both
        )?;
    }
    Ok(())
}
