//! History import: the usage Claude Code's own transcripts hold, read into the request ledger
//! so `report` covers every request made on this machine, from before the launcher was
//! installed and after Claude Code's cleanup has deleted the files.
//!
//! Each file is read as a stream of lines from where the last import stopped (its size, mtime,
//! inode, byte offset and the bytes before that offset are kept in `transcript_files`), so an
//! unchanged file costs one `stat`, a grown one only its new lines, and a truncated or
//! rewritten one is read again from the start (its requests are keyed, so nothing doubles).
//! A partly written last line is left for the next import. Lines that cannot be read are
//! counted and named (file and line), never a failed import.

pub mod background;
pub mod prices;
pub mod transcript;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, TransactionBehavior};
use serde::Serialize;

use crate::store::ledger::{self, Change, FileState, LedgerTx, Record};

/// Records written per transaction: large enough to amortise the commit, small enough that a
/// running launcher's relay waits only milliseconds for the write lock.
const ROWS_PER_TRANSACTION: usize = 20_000;

/// Bytes kept from before a file's read offset to notice a rewrite.
const TAIL_BYTES: u64 = 64;

/// At most this many malformed lines are named in the summary (all are counted).
const MAX_EXAMPLES: usize = 10;

/// Where Claude Code keeps transcripts: `$CLAUDE_CONFIG_DIR/projects` when that is set (it
/// may list several directories, comma-separated), else `~/.claude/projects` and
/// `~/.config/claude/projects` (newer releases), those that exist.
pub fn default_roots(env: &std::collections::BTreeMap<String, String>) -> Vec<PathBuf> {
    if let Some(dirs) = env
        .get("CLAUDE_CONFIG_DIR")
        .filter(|d| !d.trim().is_empty())
    {
        return dirs
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join("projects"))
            .collect();
    }
    let Some(home) = env.get("HOME").filter(|h| !h.is_empty()) else {
        return Vec::new();
    };
    let home = PathBuf::from(home);
    let xdg = env
        .get("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config"));
    vec![
        home.join(".claude").join("projects"),
        xdg.join("claude").join("projects"),
    ]
}

/// What one import did, for the command's output (text or `--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Directories searched.
    pub roots: Vec<String>,
    /// Transcript files found.
    pub files: u64,
    /// Files skipped because they had not changed since the last import.
    pub files_unchanged: u64,
    /// Files read again from the start (truncated, rewritten or replaced).
    pub files_restarted: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Complete lines read.
    pub lines: u64,
    /// Lines with a request's usage.
    pub usage_lines: u64,
    /// Requests new to the ledger.
    pub requests_added: u64,
    /// Requests already known from telemetry (now seen by both) or replaced by a larger copy.
    pub requests_merged: u64,
    /// Copies of a request already in the ledger (one line per content block).
    pub duplicates: u64,
    /// Lines of other kinds (user turns, summaries, …).
    pub other_lines: u64,
    /// Replies claude made up itself (`<synthetic>` model): no API request.
    pub synthetic_lines: u64,
    /// Lines that could not be read; see `problems`.
    pub malformed_lines: u64,
    /// Files that could not be opened or read.
    pub unreadable_files: u64,
    /// The first few problems, each naming file and line.
    pub problems: Vec<String>,
    /// Wall time of the import, milliseconds.
    pub elapsed_ms: u64,
}

impl Summary {
    /// Adds one file's counts (from a parsing thread).
    fn absorb(&mut self, o: Summary) {
        self.files_restarted += o.files_restarted;
        self.bytes_read += o.bytes_read;
        self.lines += o.lines;
        self.usage_lines += o.usage_lines;
        self.duplicates += o.duplicates;
        self.other_lines += o.other_lines;
        self.synthetic_lines += o.synthetic_lines;
        self.malformed_lines += o.malformed_lines;
        for p in o.problems {
            self.problem(p);
        }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_EXAMPLES {
            self.problems.push(text);
        }
    }
}

/// Errors that stop an import: the store, never a transcript.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The store refused a write or read.
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
}

/// Every `*.jsonl` file under `root`, recursively (sub-agents write their own files below a
/// session's directory); a missing root has none.
fn transcript_files(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => transcript_files(&path, out),
            Ok(t) if t.is_file() && path.extension().is_some_and(|e| e == "jsonl") => {
                out.push(path)
            }
            _ => {}
        }
    }
}

/// Imports every transcript under `roots` into the store behind `conn`.
pub fn import(conn: &mut Connection, roots: &[PathBuf]) -> Result<Summary, ImportError> {
    let started = Instant::now();
    let mut summary = Summary {
        roots: roots.iter().map(|r| r.display().to_string()).collect(),
        ..Summary::default()
    };
    let mut files = Vec::new();
    for root in roots {
        transcript_files(root, &mut files);
    }
    files.sort();
    summary.files = files.len() as u64;
    let states = ledger::file_states(conn)?;
    // Which files changed: a `stat` each, on this thread.
    let mut work: Vec<(String, &PathBuf, FileState)> = Vec::new();
    for path in &files {
        let key = path.display().to_string();
        let Ok(meta) = std::fs::metadata(path) else {
            summary.unreadable_files += 1;
            summary.problem(format!("{key}: cannot read its metadata"));
            continue;
        };
        let now = FileState {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            inode: meta.ino(),
            offset: 0,
            lines: 0,
            tail: Vec::new(),
        };
        if let Some(old) = states.get(&key)
            && old.size == now.size
            && old.mtime_ns == now.mtime_ns
            && old.inode == now.inode
        {
            summary.files_unchanged += 1;
            continue;
        }
        work.push((key, path, now));
    }
    // Parsing runs on every core but one's share, the writer on this thread: files are
    // independent (the ledger's merge does not depend on the order records arrive in).
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(work.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (send, receive) = std::sync::mpsc::sync_channel::<Parsed>(threads * 4);
    let mut labels = ledger::Labels::default();
    let result = std::thread::scope(|scope| {
        for _ in 0..threads {
            let send = send.clone();
            let (work, next, states) = (&work, &next, &states);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((key, path, now)) = work.get(i) else {
                        break;
                    };
                    let mut part = Summary::default();
                    let read = read_file(path, key, states.get(key), now.clone(), &mut part);
                    if send.send((key.clone(), read, part)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(send);
        let mut pending: Vec<(String, FileState, Vec<Record>)> = Vec::new();
        let mut pending_rows = 0usize;
        for (key, read, part) in receive {
            summary.absorb(part);
            match read {
                Ok((state, records)) => {
                    pending_rows += records.len();
                    pending.push((key, state, records));
                }
                Err(e) => {
                    summary.unreadable_files += 1;
                    summary.problem(format!("{key}: {e}"));
                }
            }
            if pending_rows >= ROWS_PER_TRANSACTION {
                write(conn, &mut labels, &mut pending, &mut summary)?;
                pending_rows = 0;
            }
        }
        write(conn, &mut labels, &mut pending, &mut summary)
    });
    result?;
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// One file's outcome from a parsing thread: its key, its new state and records (or why it
/// could not be read), and its counts.
type Parsed = (String, std::io::Result<(FileState, Vec<Record>)>, Summary);

/// Writes the records and file states gathered so far in one transaction.
fn write(
    conn: &mut Connection,
    labels: &mut ledger::Labels,
    pending: &mut Vec<(String, FileState, Vec<Record>)>,
    summary: &mut Summary,
) -> Result<(), ImportError> {
    if pending.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut l = LedgerTx::new(&tx, labels);
        for (_, _, records) in pending.iter() {
            for r in records {
                match l.apply(r)? {
                    Change::Added => summary.requests_added += 1,
                    Change::Merged => summary.requests_merged += 1,
                    Change::Unchanged => summary.duplicates += 1,
                }
            }
        }
        l.finish()?;
    }
    for (key, state, _) in pending.iter() {
        ledger::save_file_state(&tx, key, state)?;
    }
    tx.commit()?;
    pending.clear();
    Ok(())
}

/// Reads a file's new complete lines into records (copies within the file already reduced to
/// the largest), returning the state to save.
fn read_file(
    path: &Path,
    key: &str,
    old: Option<&FileState>,
    mut state: FileState,
    summary: &mut Summary,
) -> std::io::Result<(FileState, Vec<Record>)> {
    let mut file = std::fs::File::open(path)?;
    // Resume only where the same file grew: same inode, not shorter, same bytes before.
    let resume = match old {
        Some(old) if old.inode == state.inode && old.offset <= state.size => {
            let start = old.offset.saturating_sub(old.tail.len() as u64);
            let mut tail = vec![0u8; (old.offset - start) as usize];
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut tail)?;
            (tail == old.tail).then_some((old.offset, old.lines))
        }
        _ => None,
    };
    if old.is_some() && resume.is_none() {
        summary.files_restarted += 1;
    }
    let (offset, mut line_no) = resume.unwrap_or((0, 0));
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut consumed = offset;
    let mut line = Vec::with_capacity(64 * 1024);
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut records: Vec<Record> = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            // End of file, or a last line still being written: leave it for the next import.
            break;
        }
        consumed += n as u64;
        line_no += 1;
        summary.lines += 1;
        summary.bytes_read += n as u64;
        let text = &line[..n - 1];
        match transcript::parse(text, key) {
            Ok(r) => {
                summary.usage_lines += 1;
                match by_key.get(&r.key) {
                    Some(&i) => {
                        summary.duplicates += 1;
                        if r.tokens.total() > records[i].tokens.total() {
                            records[i] = r;
                        }
                    }
                    None => {
                        by_key.insert(r.key.clone(), records.len());
                        records.push(r);
                    }
                }
            }
            Err(transcript::Skip::Other) => summary.other_lines += 1,
            Err(transcript::Skip::Synthetic) => summary.synthetic_lines += 1,
            Err(transcript::Skip::Malformed(why)) => {
                summary.malformed_lines += 1;
                summary.problem(format!("{key}:{line_no}: {why}"));
            }
        }
    }
    // The bytes before the new offset, to recognise this file next time.
    let start = consumed.saturating_sub(TAIL_BYTES);
    let mut file = reader.into_inner();
    let mut tail = vec![0u8; (consumed - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut tail)?;
    state.offset = consumed;
    state.lines = line_no;
    state.tail = tail;
    Ok((state, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(request: &str, output: u64) -> String {
        format!(
            r#"{{"type":"assistant","sessionId":"s1","cwd":"/w/proj","gitBranch":"dev","timestamp":"2026-11-30T10:00:00Z","requestId":"{request}","message":{{"id":"m-{request}","model":"claude-sonnet-4-6","content":[{{"type":"text","text":"…"}}],"usage":{{"input_tokens":10,"output_tokens":{output},"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}}}}}"#
        )
    }

    fn requests(conn: &Connection) -> (i64, i64) {
        conn.query_row(
            "SELECT count(*), coalesce(sum(output_tokens), 0) FROM requests",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    #[test]
    fn files_are_read_once_resumed_where_they_grew_and_reread_when_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("projects");
        std::fs::create_dir_all(root.join("p")).unwrap();
        let file = root.join("p").join("s1.jsonl");
        let mut conn = crate::store::open_writer(&dir.path().join("store.db")).unwrap();
        let roots = [root.clone()];
        // Two copies of one response (one per content block), a partial copy first.
        let text = format!(
            "{}\n{}\n{{\"type\":\"user\"}}\n",
            line("r1", 3),
            line("r1", 30)
        );
        std::fs::write(&file, &text).unwrap();
        let s = import(&mut conn, &roots).unwrap();
        assert_eq!((s.requests_added, s.duplicates, s.other_lines), (1, 1, 1));
        assert_eq!(requests(&conn), (1, 30), "the largest copy is kept");

        let s = import(&mut conn, &roots).unwrap();
        assert_eq!((s.files_unchanged, s.bytes_read), (1, 0));

        // Growth: a new request, a garbage line and a line still being written.
        let grown = format!(
            "{text}{}\nnot json\n{}",
            line("r2", 5),
            &line("r3", 1)[..20]
        );
        std::fs::write(&file, &grown).unwrap();
        let s = import(&mut conn, &roots).unwrap();
        assert_eq!((s.lines, s.requests_added, s.malformed_lines), (2, 1, 1));
        assert!(
            s.problems[0].ends_with("s1.jsonl:5: not a JSON object"),
            "{s:?}"
        );
        assert_eq!(requests(&conn), (2, 35));

        // The half line completes: only it is read.
        std::fs::write(
            &file,
            format!("{text}{}\nnot json\n{}\n", line("r2", 5), line("r3", 1)),
        )
        .unwrap();
        let s = import(&mut conn, &roots).unwrap();
        assert_eq!((s.lines, s.requests_added), (1, 1));

        // Rewritten with other content of the same length and more: read from the start.
        std::fs::write(&file, format!("{}\n{}\n", line("r9", 7), line("r1", 30))).unwrap();
        let s = import(&mut conn, &roots).unwrap();
        assert_eq!((s.files_restarted, s.requests_added), (1, 1));
        assert_eq!(requests(&conn), (4, 43));
    }

    #[test]
    fn transcripts_are_found_under_claude_config_dir_else_both_home_locations() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(
            default_roots(&env(&[("CLAUDE_CONFIG_DIR", "/c1,/c2"), ("HOME", "/h")])),
            [PathBuf::from("/c1/projects"), PathBuf::from("/c2/projects")]
        );
        assert_eq!(
            default_roots(&env(&[("HOME", "/h")])),
            [
                PathBuf::from("/h/.claude/projects"),
                PathBuf::from("/h/.config/claude/projects")
            ]
        );
    }
}
