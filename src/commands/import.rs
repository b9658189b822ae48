//! `claude-telemetry import`: reads Claude Code's transcripts into the local store (the
//! launcher also runs it in the background at every launch: `history::background`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::history;
use crate::settings::Loaded;

/// Arguments of `claude-telemetry import`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ImportArgs {
    /// Read transcripts under this directory (repeatable) instead of where Claude Code keeps
    /// them ($CLAUDE_CONFIG_DIR/projects, else ~/.claude/projects and ~/.config/claude/projects).
    #[arg(long = "from", value_name = "DIR")]
    pub from: Vec<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print nothing unless the import fails (the launcher's background import).
    #[arg(long, hide = true)]
    pub quiet: bool,
}

/// Runs the import into the configured store; exit code 0 even when lines were skipped
/// (they are counted and named), 1 only when the store cannot be written.
pub fn run(args: &ImportArgs, loaded: &Loaded, out: &mut dyn Write) -> anyhow::Result<i32> {
    let path = loaded.paths.store_file(&loaded.settings.store.path);
    let roots = if args.from.is_empty() {
        history::default_roots(&crate::launcher::environment())
    } else {
        args.from.clone()
    };
    for root in &args.from {
        if !root.is_dir() {
            anyhow::bail!("--from {}: not a directory", root.display());
        }
    }
    let mut conn = crate::store::open_writer(&path)
        .with_context(|| format!("cannot open the store at {}", path.display()))?;
    let summary = history::import(&mut conn, &roots)
        .with_context(|| format!("importing into {}", path.display()))?;
    if args.quiet {
        return Ok(0);
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &summary)?;
        writeln!(out)?;
        return Ok(0);
    }
    writeln!(
        out,
        "Imported {} new request(s) ({} already known from telemetry or replaced by a larger copy) \
         from {} transcript file(s) ({} unchanged since the last import) in {} ms.",
        summary.requests_added,
        summary.requests_merged,
        summary.files,
        summary.files_unchanged,
        summary.elapsed_ms
    )?;
    writeln!(
        out,
        "Read {} line(s), {} byte(s): {} with usage ({} repeated copies), {} other, {} synthetic, {} unreadable.",
        summary.lines,
        summary.bytes_read,
        summary.usage_lines,
        summary.duplicates,
        summary.other_lines,
        summary.synthetic_lines,
        summary.malformed_lines
    )?;
    if summary.files == 0 {
        writeln!(
            out,
            "No transcripts found under: {}",
            summary.roots.join(", ")
        )?;
    }
    for p in &summary.problems {
        writeln!(out, "  skipped {p}")?;
    }
    Ok(0)
}
