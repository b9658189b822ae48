//! What the installed claude accepts, learned from that binary and cached per binary.
//!
//! Routing a run as a session injects `--settings` in front of the user's words; for a
//! subcommand that would change what claude does (`claude logs` read as a prompt). So the
//! launcher must know every word the installed claude treats as a subcommand, and every release
//! adds some. The built-in table is one release's; this module learns the installed one's:
//!
//! 1. `claude --help`: the listed subcommands (with aliases, `stop|kill`) and how each option
//!    consumes words (`<x>`, `<x...>`, `[x]`).
//! 2. Hidden subcommands (2.1.197's `logs`, 2.1.332's `daemon`, `self-hosted-runner`, …): the
//!    candidate words are taken from the binary's own strings (`` `claude logs` `` mentions,
//!    `Usage: claude …`, commander's `.command("…")`/`.alias("…")`, and argv dispatch chains
//!    that name two known subcommands), and each candidate is *probed*: `claude <word> --help`
//!    prints the top-level help, byte for byte, for a word claude takes as a prompt, and
//!    something else for a subcommand. Probing is what decides; the strings only nominate.
//!
//! Both steps run in a niced background process (this executable, started with [`LEARN_ENV`]
//! once claude is no longer starting up), so a launch waits for neither: until they are done the
//! built-in table decides, except for a bare first word it does not know (`claude logs`,
//! `claude -p hello`), for which that launch reads the help and probes the word side by side
//! (one claude start, about 0.1 s on a quiet machine, once per binary). A positive answer is
//! cached; a prompt word is never written anywhere. Probes run in an empty temporary HOME and
//! working directory, with stdin closed and a timeout, so they touch nothing of the user's.
//!
//! The cache is one small JSON file per binary, keyed by (path, size, mtime), in
//! `<cache dir>/claude-grammar/`; a warm launch reads it and nothing else.

use super::invocation::{self, ArgTable, Arity, Invocation, Reading};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable that turns this executable into the background learner for the claude
/// binary it names (set only by [`route`] when it starts the learner).
pub const LEARN_ENV: &str = "CLAUDE_TELEMETRY_LEARN_CLAUDE";
/// The cache directory the background learner writes to.
pub const LEARN_CACHE_ENV: &str = "CLAUDE_TELEMETRY_LEARN_CACHE_DIR";

/// Bumped when the cached format or the learning method changes: older files are relearned.
const FORMAT: u32 = 1;
/// One probe may take this long (a cold start of a 400 MB binary); past it the word counts as a
/// subcommand (passing through never changes what claude does).
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// The foreground step (a launch waiting) gives up sooner; the launch then uses the built-in
/// table and the next launch tries again.
const FOREGROUND_TIMEOUT: Duration = Duration::from_secs(5);
/// A background learner that has held the lock this long is taken as dead.
const STALE_LOCK: Duration = Duration::from_secs(600);
/// A file smaller than this cannot hold claude's code (the native build is hundreds of MB, the
/// npm package's JavaScript about ten): it is a wrapper, whose strings name no subcommand.
const SMALLEST_CLAUDE: u64 = 1 << 20;
/// Probes the background learner runs at once.
const PARALLEL_PROBES: usize = 2;

/// Identifies one claude binary: a reinstall or an update changes size or mtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryKey {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
}

impl BinaryKey {
    /// The key of the binary at `program` (symlinks resolved), from one `stat`.
    pub fn of(program: &Path) -> std::io::Result<BinaryKey> {
        let path = program.canonicalize()?;
        let meta = std::fs::metadata(&path)?;
        let mtime_ns = meta
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Ok(BinaryKey {
            path,
            size: meta.len(),
            mtime_ns,
        })
    }

    fn file_name(&self) -> String {
        // FNV-1a: stable across builds (std's hasher is not), and collisions are checked by the
        // key stored inside the file.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let text = format!("{}\0{}\0{}", self.path.display(), self.size, self.mtime_ns);
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}.json")
    }
}

/// The learned grammar of one claude binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grammar {
    pub format: u32,
    pub key: BinaryKey,
    /// False when the binary's `--help` is not a claude help we can read (a wrapper script, a
    /// stand-in): the built-in table decides for it, without asking again.
    pub usable: bool,
    /// `claude --version`'s first word (`2.1.332`).
    pub version: String,
    /// First words claude treats as subcommands: listed, aliases, and hidden ones found.
    pub subcommands: BTreeSet<String>,
    /// The subset of `subcommands` that `--help` does not list.
    pub hidden: BTreeSet<String>,
    /// Every option the help lists (each spelling), with how it consumes words.
    pub options: BTreeMap<String, Arity>,
    /// Digest of what `claude --help` printed (stdout and exit status), which a prompt word
    /// followed by `--help` reproduces exactly.
    pub top_help: String,
    /// True once every candidate from the binary's strings has been probed.
    pub hidden_scan_done: bool,
    /// The binary is too small to hold claude's code (a wrapper script that runs claude), so its
    /// strings name nothing: every bare first word the help does not list is probed instead.
    #[serde(default)]
    pub probe_unknown: bool,
    /// Candidate words probed and found to be prompts (claude's own strings, never the user's).
    #[serde(default)]
    pub probed_prompts: BTreeSet<String>,
}

impl Grammar {
    fn unusable(key: BinaryKey) -> Grammar {
        Grammar {
            format: FORMAT,
            key,
            usable: false,
            version: String::new(),
            subcommands: BTreeSet::new(),
            hidden: BTreeSet::new(),
            options: BTreeMap::new(),
            top_help: String::new(),
            hidden_scan_done: true,
            probe_unknown: false,
            probed_prompts: BTreeSet::new(),
        }
    }
}

impl ArgTable for Grammar {
    fn is_subcommand(&self, word: &str) -> bool {
        self.subcommands.contains(word)
    }

    fn arity(&self, option: &str) -> Arity {
        self.options.get(option).copied().unwrap_or(Arity::Flag)
    }
}

/// Why a grammar could not be learned; the built-in table is used instead.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("cannot run {program}: {source}")]
    Run {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} --help timed out")]
    Timeout { program: String },
    #[error("{program} --help printed no option or command list (exit {status})")]
    Unrecognised { program: String, status: i32 },
}

/// Decides session vs pass-through for `args` from what the claude at `program` accepts.
/// Never fails: when nothing can be learned, the built-in table decides.
///
/// A new binary costs the launch nothing unless the answer depends on it: the built-in table
/// decides while the background learner runs, except for a bare first word the table does not
/// know (`claude logs`, `claude hello`), for which this launch reads the binary's `--help` and,
/// if the word is not listed there, probes it (about 0.1 s each, once per binary).
pub fn route(program: &Path, args: &[String], cache_dir: &Path) -> Route {
    let Ok(key) = BinaryKey::of(program) else {
        return Route::built_in(args, None);
    };
    let file = cache_dir.join("claude-grammar").join(key.file_name());
    // A probe started while the help is read, for the word the built-in table found (a new
    // binary's first launch then costs one claude start, not two in a row).
    let mut early_probe = None;
    let mut grammar = match load(&file, &key) {
        Some(g) if !g.usable => return Route::built_in(args, None),
        Some(g) => g,
        None => {
            let word = match invocation::read_args(args, &invocation::BuiltIn) {
                Reading::Decided(invocation) => {
                    return Route {
                        invocation,
                        learn: Some(pending(program, cache_dir, &file)),
                    };
                }
                Reading::BareWord(word) => word,
            };
            let scratch = Scratch::new();
            early_probe = spawn_probe(program, &[word.as_str(), "--help"], scratch.path())
                .ok()
                .map(|child| (word, child, scratch));
            match learn_listed(program, key.clone(), FOREGROUND_TIMEOUT) {
                Ok(g) => {
                    let _ = save(&file, &g);
                    g
                }
                Err(e) => {
                    if let Some((_, child, _)) = early_probe {
                        kill_probe(child);
                    }
                    if let LearnError::Unrecognised { .. } = e {
                        // Not a claude whose help we can read (a wrapper, a stand-in):
                        // remembered, so later launches do not ask again.
                        let _ = save(&file, &Grammar::unusable(key));
                    }
                    return Route::built_in(args, None);
                }
            }
        }
    };
    let learn = (!grammar.hidden_scan_done).then(|| pending(program, cache_dir, &file));
    let reading = invocation::read_args(args, &grammar);
    let early = match early_probe {
        Some((word, child, _scratch)) if reading == Reading::BareWord(word.clone()) => {
            Some(wait_probe(child, FOREGROUND_TIMEOUT))
        }
        Some((_, child, _)) => {
            kill_probe(child);
            None
        }
        None => None,
    };
    let invocation = match reading {
        Reading::Decided(invocation) => invocation,
        Reading::BareWord(_) if grammar.hidden_scan_done && !grammar.probe_unknown => {
            Invocation::Session
        }
        Reading::BareWord(word) => {
            let subcommand = match early {
                Some(Some(out)) => out.digest() != grammar.top_help,
                Some(None) => true,
                None => probe_is_subcommand(program, &word, &grammar.top_help, FOREGROUND_TIMEOUT),
            };
            if subcommand {
                grammar.subcommands.insert(word.clone());
                grammar.hidden.insert(word);
                let _ = save(&file, &grammar);
                Invocation::PassThrough
            } else {
                Invocation::Session
            }
        }
    };
    Route { invocation, learn }
}

/// A routing decision, and the background learning it leaves to do.
#[derive(Debug)]
pub struct Route {
    pub invocation: Invocation,
    learn: Option<PendingLearn>,
}

impl Route {
    fn built_in(args: &[String], learn: Option<PendingLearn>) -> Route {
        Route {
            invocation: invocation::classify(args),
            learn,
        }
    }

    /// Starts the background learner if this binary is not fully learned yet. The launcher
    /// calls it when claude is no longer starting up: before exec'ing a pass-through, after a
    /// session's claude has exited (so the probes never compete with claude's own start).
    pub fn start_learning(&self) {
        if let Some(p) = &self.learn {
            start_background_learner(&p.program, &p.cache_dir, &p.file);
        }
    }
}

#[derive(Debug)]
struct PendingLearn {
    program: PathBuf,
    cache_dir: PathBuf,
    file: PathBuf,
}

fn pending(program: &Path, cache_dir: &Path, file: &Path) -> PendingLearn {
    PendingLearn {
        program: program.to_path_buf(),
        cache_dir: cache_dir.to_path_buf(),
        file: file.to_path_buf(),
    }
}

/// The cached grammar of the binary at `program`, if one has been learned (for `doctor`).
pub fn cached(program: &Path, cache_dir: &Path) -> Option<Grammar> {
    let key = BinaryKey::of(program).ok()?;
    load(
        &cache_dir.join("claude-grammar").join(key.file_name()),
        &key,
    )
}

fn load(file: &Path, key: &BinaryKey) -> Option<Grammar> {
    let text = std::fs::read(file).ok()?;
    let grammar: Grammar = serde_json::from_slice(&text).ok()?;
    (grammar.format == FORMAT && grammar.key == *key).then_some(grammar)
}

/// Writes atomically (temp file + rename): a reader sees the old file or the new, never half.
fn save(file: &Path, grammar: &Grammar) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    // The launcher owns its cache directory and the `claude-grammar` folder in it, not the
    // folders above: when the one holding the cache is gone (the user removed the tree, or a
    // test's temporary home was deleted while a detached learner or a probe still ran), the
    // grammar is not kept rather than the whole tree recreated and left behind.
    let above_cache = dir.parent().and_then(Path::parent);
    if !dir.is_dir() && above_cache.is_some_and(|p| !p.as_os_str().is_empty() && !p.is_dir()) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("grammar"),
        std::process::id()
    ));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(grammar).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, file)
}

/// Step 1: `--help` and `--version`, run side by side.
pub fn learn_listed(
    program: &Path,
    key: BinaryKey,
    timeout: Duration,
) -> Result<Grammar, LearnError> {
    let name = program.display().to_string();
    let scratch = Scratch::new();
    let help =
        spawn_probe(program, &["--help"], scratch.path()).map_err(|source| LearnError::Run {
            program: name.clone(),
            source,
        })?;
    let version = spawn_probe(program, &["--version"], scratch.path()).ok();
    let help = wait_probe(help, timeout);
    let parsed = help
        .as_ref()
        .map(|h| parse_help(&String::from_utf8_lossy(&h.stdout)));
    let usable = parsed
        .as_ref()
        .is_some_and(|(commands, options)| !commands.is_empty() && !options.is_empty());
    let version = match version {
        Some(child) if usable => wait_probe(child, timeout),
        Some(child) => {
            kill_probe(child);
            None
        }
        None => None,
    }
    .map(|out| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    })
    .unwrap_or_default();
    let (Some(help), Some((subcommands, options))) = (help, parsed) else {
        return Err(LearnError::Timeout { program: name });
    };
    if !usable {
        return Err(LearnError::Unrecognised {
            program: name,
            status: help.status,
        });
    }
    Ok(Grammar {
        format: FORMAT,
        key,
        usable: true,
        version,
        subcommands,
        hidden: BTreeSet::new(),
        options,
        top_help: help.digest(),
        hidden_scan_done: false,
        probe_unknown: false,
        probed_prompts: BTreeSet::new(),
    })
}

/// Step 2: nominate candidates from the binary's strings and probe each one not yet known.
pub fn learn_hidden(program: &Path, grammar: &mut Grammar) -> std::io::Result<()> {
    if grammar.key.size < SMALLEST_CLAUDE {
        grammar.probe_unknown = true;
        grammar.hidden_scan_done = true;
        return Ok(());
    }
    let candidates = scan_candidates(&grammar.key.path, &grammar.subcommands)?;
    let todo: Vec<String> = candidates
        .into_iter()
        .filter(|w| !grammar.subcommands.contains(w) && !grammar.probed_prompts.contains(w))
        .collect();
    for chunk in todo.chunks(PARALLEL_PROBES) {
        let scratch = Scratch::new();
        let running: Vec<_> = chunk
            .iter()
            .map(|w| {
                (
                    w,
                    spawn_probe(program, &[w.as_str(), "--help"], scratch.path()),
                )
            })
            .collect();
        for (word, child) in running {
            let subcommand = match child.ok().and_then(|c| wait_probe(c, PROBE_TIMEOUT)) {
                Some(out) => out.digest() != grammar.top_help,
                None => true,
            };
            if subcommand {
                grammar.subcommands.insert(word.clone());
                grammar.hidden.insert(word.clone());
            } else {
                grammar.probed_prompts.insert(word.clone());
            }
        }
    }
    grammar.hidden_scan_done = true;
    Ok(())
}

/// Whether claude treats `word` as a subcommand: `claude <word> --help` differs from the
/// top-level help. A probe that cannot run or hangs counts as a subcommand.
fn probe_is_subcommand(program: &Path, word: &str, top_help: &str, timeout: Duration) -> bool {
    let scratch = Scratch::new();
    match spawn_probe(program, &[word, "--help"], scratch.path())
        .ok()
        .and_then(|c| wait_probe(c, timeout))
    {
        Some(out) => out.digest() != top_help,
        None => true,
    }
}

/// Reads claude's `--help`: the "Commands:" entries (`name|alias [args]`) and every option
/// spelling with its arity.
pub fn parse_help(text: &str) -> (BTreeSet<String>, BTreeMap<String, Arity>) {
    let mut subcommands = BTreeSet::new();
    let mut options = BTreeMap::new();
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') && line.trim_end().ends_with(':') {
            section = line.trim_end();
            continue;
        }
        // Entries start at column 2; wrapped descriptions are indented further.
        let Some(entry) = line.strip_prefix("  ") else {
            continue;
        };
        if entry.starts_with(' ') || entry.is_empty() {
            continue;
        }
        let head = entry.split("  ").next().unwrap_or("").trim();
        match section {
            "Commands:" => {
                let names = head.split_whitespace().next().unwrap_or("");
                for name in names.split('|') {
                    if invocation::is_bare_word(name) && name != "help" {
                        subcommands.insert(name.to_string());
                    }
                }
            }
            "Options:" => parse_option_entry(head, &mut options),
            _ => {}
        }
    }
    (subcommands, options)
}

fn parse_option_entry(head: &str, options: &mut BTreeMap<String, Arity>) {
    // `-d, --debug [filter]`, `--allowedTools, --allowed-tools <tools...>`, `-h, --help`
    let mut names = Vec::new();
    let mut value = "";
    for part in head.split(", ") {
        let mut words = part.splitn(2, ' ');
        let name = words.next().unwrap_or("");
        if name.starts_with('-') {
            names.push(name.to_string());
        }
        if let Some(rest) = words.next() {
            value = rest.trim();
        }
    }
    let arity = if value.starts_with('<') {
        if value.contains("...") {
            Arity::Variadic
        } else {
            Arity::Value
        }
    } else if value.starts_with('[') {
        if value.contains("...") {
            Arity::Variadic
        } else {
            Arity::OptionalValue
        }
    } else {
        Arity::Flag
    };
    for name in names {
        options.insert(name, arity);
    }
}

/// Candidate subcommand words from the binary's strings (see the module doc). Reads the file in
/// chunks, so a 400 MB binary needs a few MB of memory; fixed needles (memchr's SIMD search)
/// keep the scan well under a second.
pub fn scan_candidates(
    binary: &Path,
    known: &BTreeSet<String>,
) -> std::io::Result<BTreeSet<String>> {
    let mut found: BTreeSet<String> = BTreeSet::new();
    let mut chains: Vec<BTreeSet<String>> = Vec::new();
    let mut file = std::fs::File::open(binary)?;
    const CHUNK: usize = 8 << 20;
    const OVERLAP: usize = 4096;
    let mut buf = vec![0u8; CHUNK + OVERLAP];
    let mut carried = 0;
    loop {
        let n = read_full(&mut file, &mut buf[carried..])?;
        let len = carried + n;
        scan_window(&buf[..len], &mut found, &mut chains);
        if n == 0 || len < buf.len() {
            break;
        }
        // Keep the tail so a match across the chunk boundary is seen whole next time (a match
        // wholly inside the tail is seen twice, which a set absorbs).
        buf.copy_within(len - OVERLAP..len, 0);
        carried = OVERLAP;
    }
    // A dispatch chain nominates its words when it names at least two words already known or
    // nominated (`t[0]==="remote-control"||t[0]==="rc"||t[0]==="remote"…`).
    let seeds: BTreeSet<String> = found.union(known).cloned().collect();
    for words in chains {
        if words.intersection(&seeds).count() >= 2 {
            found.extend(words);
        }
    }
    Ok(found)
}

/// `[a-z][a-z0-9-]{1,30}` at the start of `at`, followed by a byte that cannot continue it.
fn word_at(at: &[u8]) -> Option<&str> {
    let first = *at.first()?;
    if !first.is_ascii_lowercase() {
        return None;
    }
    let len = at
        .iter()
        .take(32)
        .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || **b == b'-')
        .count();
    let next = at.get(len).copied().unwrap_or(b' ');
    if !(2..=31).contains(&len) || next.is_ascii_alphanumeric() || next == b'_' {
        return None;
    }
    std::str::from_utf8(&at[..len]).ok()
}

fn scan_window(w: &[u8], found: &mut BTreeSet<String>, chains: &mut Vec<BTreeSet<String>>) {
    use memchr::memmem;
    let mut add = |word: Option<&str>| {
        if let Some(word) = word {
            found.insert(word.to_string());
        }
    };
    // `` `claude logs` ``, "Usage: claude daemon …"
    for i in memmem::find_iter(w, b"claude ") {
        let before = i.checked_sub(1).map(|j| w[j]);
        let usage = i >= 7 && w[i - 7..i].eq_ignore_ascii_case(b"usage: ");
        if usage || matches!(before, Some(b'`' | b'\'' | b'"')) {
            add(word_at(&w[i + 7..]));
        }
    }
    // commander: `.command("doctor")`, `.alias("rc")`
    for needle in [&b".command(\""[..], b".alias(\""] {
        for i in memmem::find_iter(w, needle) {
            let word = word_at(&w[i + needle.len()..]);
            if word.is_some_and(|wd| w.get(i + needle.len() + wd.len()) == Some(&b'"')) {
                add(word);
            }
        }
    }
    // commander, bundled: `new Dot("logs")`
    for i in memmem::find_iter(w, b"new ") {
        let rest = &w[i + 4..];
        let ident = rest
            .iter()
            .take(5)
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'$')
            .count();
        if (1..=4).contains(&ident) && rest[ident..].starts_with(b"(\"") {
            let word = word_at(&rest[ident + 2..]);
            if word.is_some_and(|wd| rest[ident + 2 + wd.len()..].starts_with(b"\")")) {
                add(word);
            }
        }
    }
    // argv dispatch chains: `t[0]==="a"||t[0]==="b"`, `case"a":case"b":`
    for (needle, joined) in [
        (&b"[0]===\""[..], chain_joined_by_or as fn(&[u8]) -> bool),
        (b"case\"", |gap: &[u8]| gap == b":"),
    ] {
        let mut chain = BTreeSet::new();
        let mut last_end = None;
        for i in memmem::find_iter(w, needle) {
            let start = i + needle.len();
            let Some(word) = word_at(&w[start..]) else {
                continue;
            };
            let end = start + word.len();
            if w.get(end) != Some(&b'"') {
                continue;
            }
            let adjacent = last_end.is_some_and(|e: usize| e <= i && joined(&w[e..i]));
            if !adjacent && chain.len() >= 2 {
                chains.push(std::mem::take(&mut chain));
            } else if !adjacent {
                chain.clear();
            }
            chain.insert(word.to_string());
            last_end = Some(end + 1);
        }
        if chain.len() >= 2 {
            chains.push(chain);
        }
    }
}

/// Between two `x[0]==="…"` tests of one chain: `||` and a short variable name.
fn chain_joined_by_or(gap: &[u8]) -> bool {
    gap.len() <= 5
        && gap.starts_with(b"||")
        && gap[2..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$')
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match file.read(&mut buf[total..])? {
            0 => break,
            n => total += n,
        }
    }
    Ok(total)
}

/// What one probe printed.
struct ProbeOutput {
    stdout: Vec<u8>,
    status: i32,
}

impl ProbeOutput {
    fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.status.to_le_bytes());
        h.update(&self.stdout);
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    }
}

/// Starts `program args` in the scratch dir as HOME and working directory, with a minimal
/// environment, stdin closed, stdout captured (read on a thread so a large help never blocks).
fn spawn_probe(
    program: &Path,
    args: &[&str],
    scratch: &Path,
) -> std::io::Result<(std::process::Child, std::thread::JoinHandle<Vec<u8>>)> {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("HOME", scratch)
        .env("TMPDIR", scratch)
        .env("LANG", "C.UTF-8")
        .env("DISABLE_AUTOUPDATER", "1")
        .current_dir(scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    let mut child = command.spawn()?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    Ok((child, reader))
}

fn kill_probe((mut child, reader): (std::process::Child, std::thread::JoinHandle<Vec<u8>>)) {
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
}

fn wait_probe(
    (mut child, reader): (std::process::Child, std::thread::JoinHandle<Vec<u8>>),
    timeout: Duration,
) -> Option<ProbeOutput> {
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return None;
            }
        }
    };
    let stdout = reader.join().ok()?;
    use std::os::unix::process::ExitStatusExt;
    let status = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Some(ProbeOutput { stdout, status })
}

/// An empty temporary directory for probes, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "claude-telemetry-probe-{}-{nanos}",
            std::process::id()
        ));
        // Only the probe's own folder: a temp dir that is gone (TMPDIR inside a home or test
        // sandbox deleted while a detached learner still probes) is not recreated and left
        // behind; the probe then fails to start, and the learner with it.
        let _ = std::fs::create_dir(&dir);
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the background learner unless one holds the lock for this binary: this executable,
/// detached (own session, no terminal, no inherited output), niced.
fn start_background_learner(program: &Path, cache_dir: &Path, file: &Path) {
    let lock = file.with_extension("lock");
    if let Some(dir) = lock.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(meta) = std::fs::metadata(&lock) {
        let fresh = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age < STALE_LOCK);
        if fresh {
            return;
        }
        let _ = std::fs::remove_file(&lock);
    }
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .is_err()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        let _ = std::fs::remove_file(&lock);
        return;
    };
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(exe);
    command
        .env(LEARN_ENV, program)
        .env(LEARN_CACHE_ENV, cache_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, setpriority) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            Ok(())
        });
    }
    if command.spawn().is_err() {
        let _ = std::fs::remove_file(&lock);
    }
}

/// The background learner's entry point: when [`LEARN_ENV`] is set, learns that binary's
/// hidden subcommands into the cache and returns the exit code; otherwise `None` (a normal run).
pub fn learner_main() -> Option<i32> {
    let program = PathBuf::from(std::env::var_os(LEARN_ENV)?);
    let cache_dir = PathBuf::from(std::env::var_os(LEARN_CACHE_ENV)?);
    Some(learn_into_cache(&program, &cache_dir))
}

/// Learns the binary completely (help, then hidden subcommands) into the cache; 0 on success.
pub fn learn_into_cache(program: &Path, cache_dir: &Path) -> i32 {
    let Ok(key) = BinaryKey::of(program) else {
        return 1;
    };
    let file = cache_dir.join("claude-grammar").join(key.file_name());
    let lock = file.with_extension("lock");
    let result = (|| {
        let mut grammar = match load(&file, &key) {
            Some(g) => g,
            None => {
                learn_listed(program, key.clone(), PROBE_TIMEOUT).map_err(std::io::Error::other)?
            }
        };
        if grammar.usable && !grammar.hidden_scan_done {
            learn_hidden(program, &mut grammar)?;
        }
        // Words a foreground probe found meanwhile are kept.
        if let Some(now) = load(&file, &key) {
            grammar.subcommands.extend(now.subcommands);
            grammar.hidden.extend(now.hidden);
        }
        save(&file, &grammar)
    })();
    let _ = std::fs::remove_file(&lock);
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("claude-telemetry: learning {}: {e}", program.display());
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grammar_saved_after_its_cache_tree_was_removed_does_not_recreate_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = BinaryKey {
            path: PathBuf::from("/nowhere/claude"),
            size: 1,
            mtime_ns: 2,
        };
        let grammar = Grammar::unusable(key.clone());
        // A cache directory not made yet, inside a folder that exists: made, and kept.
        let fresh = dir
            .path()
            .join("cache")
            .join("claude-grammar")
            .join(key.file_name());
        save(&fresh, &grammar).expect("save");
        assert!(
            load(&fresh, &key).is_some(),
            "a first save makes the cache and keeps it"
        );
        // The folder that held the cache was removed meanwhile: nothing is recreated.
        let home = dir.path().join("sandbox");
        let gone = home.join("scratch").join("cache").join("claude-grammar");
        save(&gone.join(key.file_name()), &grammar).expect("save");
        assert!(!home.exists(), "the removed tree stays removed");
    }

    const HELP: &str = "\
Usage: claude [options] [command] [prompt]

Arguments:
  prompt                                Your prompt

Options:
  --add-dir <directories...>            More directories Claude can access
  --allowedTools, --allowed-tools <tools...>
      Comma or space-separated list of tool names to allow (e.g. \"Bash(git *)
      Edit\")
  --autocompact <auto|tokens>           Auto-compact window size (auto, or at
                                        least 100k tokens)
  --cloud [description|session_id|url]  Create a cloud session with the given
  -d, --debug [filter]                  Enable debug mode with optional category
  -h, --help                            Display help for command
  --model <model>                       Model for the current session. Use an
  --verbose                             Override the verbose setting

Commands:
  agents [options]                      Manage background agents
  attach <id|name>                      Open a background session in this
                                        terminal. <id> is the short id that
  plugin|plugins                        Manage Claude Code plugins
  stop|kill <id>                        Stop a background session. Its
  update|upgrade                        Check for updates and install if
";

    #[test]
    fn help_gives_commands_with_aliases_and_option_arities() {
        let (commands, options) = parse_help(HELP);
        let want: BTreeSet<String> = [
            "agents", "attach", "kill", "plugin", "plugins", "stop", "update", "upgrade",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(commands, want);
        assert_eq!(options["--add-dir"], Arity::Variadic);
        assert_eq!(options["--allowedTools"], Arity::Variadic);
        assert_eq!(options["--allowed-tools"], Arity::Variadic);
        assert_eq!(options["--autocompact"], Arity::Value);
        assert_eq!(options["--cloud"], Arity::OptionalValue);
        assert_eq!(options["-d"], Arity::OptionalValue);
        assert_eq!(options["--debug"], Arity::OptionalValue);
        assert_eq!(options["-h"], Arity::Flag);
        assert_eq!(options["--verbose"], Arity::Flag);
        // Wrapped description lines are not entries.
        assert!(!options.contains_key("Edit\")"));
        assert!(!commands.contains("terminal."));
    }

    #[test]
    fn a_learned_grammar_reads_new_options_and_subcommands() {
        let (subcommands, options) = parse_help(HELP);
        let g = Grammar {
            format: FORMAT,
            key: BinaryKey {
                path: "/x".into(),
                size: 1,
                mtime_ns: 1,
            },
            usable: true,
            version: "2.1.332".into(),
            subcommands,
            hidden: BTreeSet::new(),
            options,
            top_help: String::new(),
            hidden_scan_done: true,
            probe_unknown: false,
            probed_prompts: BTreeSet::new(),
        };
        let read = |args: &[&str]| {
            invocation::read_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &g)
        };
        assert_eq!(
            read(&["attach", "abc"]),
            Reading::Decided(Invocation::PassThrough)
        );
        assert_eq!(
            read(&["kill", "abc"]),
            Reading::Decided(Invocation::PassThrough)
        );
        // `--autocompact` takes a value: `auto` is not the prompt, "fix it" is.
        assert_eq!(
            read(&["--model", "x", "--autocompact", "auto", "fix it"]),
            Reading::Decided(Invocation::Session)
        );
        assert_eq!(
            read(&["--autocompact", "auto", "attach"]),
            Reading::Decided(Invocation::PassThrough)
        );
        assert_eq!(read(&["hello"]), Reading::BareWord("hello".into()));
    }

    #[test]
    fn cache_file_is_keyed_by_path_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let key = BinaryKey {
            path: "/opt/claude".into(),
            size: 10,
            mtime_ns: 5,
        };
        let g = Grammar {
            format: FORMAT,
            key: key.clone(),
            usable: true,
            version: "1".into(),
            subcommands: BTreeSet::new(),
            hidden: BTreeSet::new(),
            options: BTreeMap::new(),
            top_help: "d".into(),
            hidden_scan_done: false,
            probe_unknown: false,
            probed_prompts: BTreeSet::new(),
        };
        let file = dir.path().join(key.file_name());
        save(&file, &g).unwrap();
        assert_eq!(load(&file, &key), Some(g));
        let newer = BinaryKey {
            mtime_ns: 6,
            ..key.clone()
        };
        assert_eq!(load(&file, &newer), None, "an updated binary is relearned");
        assert_ne!(key.file_name(), newer.file_name());
    }

    #[test]
    fn candidates_come_from_mentions_commander_calls_and_dispatch_chains() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("claude");
        let mut body = vec![0u8; 9 << 20]; // crosses a chunk boundary
        let text: &[u8] = br#"run `claude logs <id>` or `claude remote-control` e.command("doctor").alias("rc") if(t[0]==="remote-control"||t[0]==="rc"||t[0]==="bridge"){} case"zz":case"yy": x==="nope""#;
        let at = (8 << 20) - 40;
        body[at..at + text.len()].copy_from_slice(text);
        std::fs::write(&bin, &body).unwrap();
        let found = scan_candidates(&bin, &BTreeSet::new()).unwrap();
        for w in ["logs", "doctor", "rc", "remote-control", "bridge"] {
            assert!(found.contains(w), "{w} in {found:?}");
        }
        for w in ["zz", "yy", "nope"] {
            assert!(!found.contains(w), "{w} in {found:?}");
        }
    }
}
