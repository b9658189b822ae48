//! Generates Claude Code transcripts (`<dir>/projects/<cwd>/<session>.jsonl`) for the history
//! benchmark (`benches/history-vs-ccusage.sh`): N API requests over several projects, sessions
//! and days, in the line format the real Claude Code 2.1.197 and 2.1.332 write.
//!
//! The format was taken from transcripts the real binaries wrote against the fake Messages API
//! of `tests/support/anthropic.rs` (`CLAUDE_CONFIG_DIR` in a temp dir, print-mode turns with a
//! Bash tool call): `user` prompt and tool-result lines, one `assistant` line per content block
//! of a response — each repeating the response's message id, request id and whole `usage`
//! (with the 5-minute / 1-hour `cache_creation` split) — and bookkeeping lines
//! (`queue-operation`, `last-prompt`; on 2.1.332 also `api-request`, here one per prompt). The
//! fake API answers with one block; real responses often have two or three (thinking, text,
//! tool_use), which is what makes transcripts repeat usage, so responses here have one to three.
//!
//! Writes a manifest (JSON) with the true totals per model: the figures both ccusage and
//! `claude-telemetry import` must reproduce. Deterministic for a given seed.
//! Run: `cargo bench --bench gen_transcripts -- DIR [REQUESTS] [MANIFEST]`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

const PROJECTS: [&str; 12] = [
    "api", "web", "infra", "mobile", "data", "ml", "docs", "billing", "auth", "search", "cli",
    "sdk",
];
const BRANCHES: [&str; 6] = [
    "main",
    "main",
    "main",
    "feature/import",
    "fix/flaky-ci",
    "HEAD",
];
/// Main model of a session: sonnet in 6 of 10, else opus; one call in ten is a haiku
/// auxiliary call (titles, summaries) as claude makes them.
const SONNET: &str = "claude-sonnet-4-6";
const OPUS: &str = "claude-opus-4-8";
const HAIKU: &str = "claude-haiku-4-5";
/// 2026-10-19T00:00:00Z
const FIRST_DAY: f64 = 1_792_454_400.0;
const DAYS: u64 = 45;
const PROMPT: &str = "continue with the next step";
const THINKING: &str = "Let me look at how the module handles this case before changing it; \
                        the tests around it will tell which behaviour callers rely on.";
const TEXT: &str = "I updated the function to return early when the input is empty and added \
                    a test that covers the case. The rest of the module is unchanged.";
const TOOL_RESULT: &str = "running 12 tests\\ntest result: ok. 12 passed; 0 failed";
/// Hex digits spelled in the base58 alphabet (no 0, O, I, l), for ids shaped like Anthropic's.
const B58ISH: &[u8; 16] = b"ZLkW5Jq8nPx4rT9s";

/// xorshift64*: deterministic output without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
    fn id(&mut self, prefix: &str, n: usize) -> String {
        let mut s = String::with_capacity(prefix.len() + n);
        s.push_str(prefix);
        let mut bits = 0u64;
        for i in 0..n {
            if i % 16 == 0 {
                bits = self.next();
            }
            s.push(B58ISH[(bits & 15) as usize] as char);
            bits >>= 4;
        }
        s
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of Unix seconds `t`.
fn iso(t: f64) -> String {
    let ms = (t * 1000.0).round() as i64;
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[derive(Default, Clone, Copy)]
struct Totals {
    requests: u64,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
    cache_5m: u64,
    cache_1h: u64,
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: gen_transcripts DIR [REQUESTS] [MANIFEST]");
        std::process::exit(2);
    };
    let want: u64 = args
        .get(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let manifest = args.get(2);
    let started = Instant::now();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ 12);
    let mut totals: BTreeMap<&str, Totals> = BTreeMap::new();
    let (mut requests, mut sessions, mut lines, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut out = String::with_capacity(1 << 20);
    while requests < want {
        let n = rng.range(10, 150).min(want - requests);
        let project = PROJECTS[rng.below(PROJECTS.len() as u64) as usize];
        let cwd = format!("/home/dev/src/{project}");
        let proj_dir = Path::new(dir).join("projects").join(cwd.replace('/', "-"));
        std::fs::create_dir_all(&proj_dir).expect("project dir");
        let session = rng.uuid();
        let v332 = rng.unit() < 0.7;
        let version = if v332 { "2.1.332" } else { "2.1.197" };
        let branch = BRANCHES[rng.below(BRANCHES.len() as u64) as usize];
        let main_model = if rng.unit() < 0.6 { SONNET } else { OPUS };
        let mut t = FIRST_DAY
            + rng.below(DAYS) as f64 * 86_400.0
            + rng.uniform(7.0 * 3600.0, 20.0 * 3600.0);
        let common = format!(
            r#""userType":"external","entrypoint":"cli","cwd":"{cwd}","sessionId":"{session}","version":"{version}","gitBranch":"{branch}"}}"#
        );
        out.clear();
        let mut parent = "null".to_owned();
        let mut prompt_id = String::new();
        for i in 0..n {
            if i % 6 == 0 {
                prompt_id = rng.uuid();
                let u_id = rng.uuid();
                let ts = iso(t);
                let _ = writeln!(
                    out,
                    r#"{{"type":"queue-operation","operation":"enqueue","timestamp":"{ts}","sessionId":"{session}","content":"{PROMPT}"}}"#
                );
                let _ = writeln!(
                    out,
                    r#"{{"parentUuid":{parent},"isSidechain":false,"promptId":"{prompt_id}","type":"user","message":{{"role":"user","content":"{PROMPT}"}},"uuid":"{u_id}","timestamp":"{ts}","permissionMode":"default",{common}"#
                );
                parent = format!("\"{u_id}\"");
                lines += 2;
                t += rng.uniform(0.5, 3.0);
            }
            let model = if rng.below(10) == 0 {
                HAIKU
            } else {
                main_model
            };
            let input = rng.range(1, 400);
            let output = rng.range(20, 2500);
            let read = rng.below(120_000);
            let c5m = rng.below(6000);
            let c1h = if rng.below(4) == 0 {
                rng.below(3000)
            } else {
                0
            };
            let blocks: &[&str] = match rng.below(7) {
                0..=2 => &["tool_use"],
                3 => &["text", "tool_use"],
                4 => &["thinking", "tool_use"],
                5 => &["thinking", "text", "tool_use"],
                _ => &["text"],
            };
            let thinking = if blocks.contains(&"thinking") {
                (output / 2).min(800)
            } else {
                0
            };
            let msg_id = rng.id("msg_01", 22);
            let req_id = rng.id("req_011C", 18);
            let usage = format!(
                r#"{{"input_tokens":{input},"cache_creation_input_tokens":{},"cache_read_input_tokens":{read},"output_tokens":{output},{}"server_tool_use":{{"web_search_requests":0,"web_fetch_requests":0}},"service_tier":"standard","cache_creation":{{"ephemeral_1h_input_tokens":{c1h},"ephemeral_5m_input_tokens":{c5m}}},"inference_geo":"","iterations":[],"speed":"standard"{}}}"#,
                c5m + c1h,
                if v332 {
                    format!(r#""output_tokens_details":{{"thinking_tokens":{thinking}}},"#)
                } else {
                    String::new()
                },
                if v332 {
                    r#","fallback_credit":null"#
                } else {
                    ""
                }
            );
            if v332 && i % 6 == 0 {
                let _ = writeln!(
                    out,
                    r#"{{"type":"api-request","sessionId":"{session}","id":"{}","timestamp":"{}","version":"2.1.332","querySource":"repl_main_thread","shapeHash":"{:016x}{:016x}{:016x}{:016x}","params":{{"model":"{model}","max_tokens":32000,"thinking":{{"type":"adaptive","display":"omitted"}},"output_config":{{"effort":"high"}}}},"thread":{{"type":"none"}},"keep":1}}"#,
                    rng.uuid(),
                    iso(t),
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next()
                );
                lines += 1;
            }
            t += rng.uniform(2.0, 30.0);
            let tool_id = rng.id("toolu_01", 22);
            for (b, kind) in blocks.iter().enumerate() {
                let content = match *kind {
                    "thinking" => format!(
                        r#"{{"type":"thinking","thinking":"{THINKING}","signature":"{}"}}"#,
                        rng.id("Eu", 40)
                    ),
                    "text" => format!(r#"{{"type":"text","text":"{TEXT}"}}"#),
                    _ => format!(
                        r#"{{"type":"tool_use","id":"{tool_id}","name":"Bash","input":{{"command":"cargo test --lib","description":"Run the unit tests"}}}}"#
                    ),
                };
                let last = b + 1 == blocks.len();
                let stop = match (last, *kind) {
                    (false, _) => "null",
                    (true, "tool_use") => "\"tool_use\"",
                    (true, _) => "\"end_turn\"",
                };
                let a_id = rng.uuid();
                let ts = iso(t);
                let extra = if v332 {
                    format!(
                        r#""apiBlockIndex":{b},"requestId":"{req_id}","requestRef":"{}","requestedModel":"{model}","promptCacheRequested":"5m","type":"assistant","uuid":"{a_id}","timestamp":"{ts}","effort":"high","perTurnEffort":null,"madeBy":"model","#,
                        rng.uuid()
                    )
                } else {
                    format!(
                        r#""requestId":"{req_id}","type":"assistant","uuid":"{a_id}","timestamp":"{ts}","#
                    )
                };
                let _ = writeln!(
                    out,
                    r#"{{"parentUuid":{parent},"isSidechain":false,"message":{{"id":"{msg_id}","type":"message","role":"assistant","model":"{model}","content":[{content}],"stop_reason":{stop},"stop_sequence":null,"usage":{usage},"stop_details":null}},{extra}{common}"#
                );
                parent = format!("\"{a_id}\"");
                lines += 1;
                t += rng.uniform(0.05, 0.5);
            }
            if blocks.last() == Some(&"tool_use") {
                let r_id = rng.uuid();
                let _ = writeln!(
                    out,
                    r#"{{"parentUuid":{parent},"isSidechain":false,"promptId":"{prompt_id}","type":"user","message":{{"role":"user","content":[{{"tool_use_id":"{tool_id}","type":"tool_result","content":"{TOOL_RESULT}","is_error":false}}]}},"uuid":"{r_id}","timestamp":"{}","toolUseResult":{{"stdout":"{TOOL_RESULT}","stderr":"","interrupted":false,"isImage":false,"noOutputExpected":false}},"sourceToolAssistantUUID":{parent},{common}"#,
                    iso(t)
                );
                parent = format!("\"{r_id}\"");
                lines += 1;
                t += rng.uniform(0.5, 5.0);
            }
            let m = totals.entry(model).or_default();
            m.requests += 1;
            m.input += input;
            m.output += output;
            m.cache_read += read;
            m.cache_creation += c5m + c1h;
            m.cache_5m += c5m;
            m.cache_1h += c1h;
        }
        let _ = writeln!(
            out,
            r#"{{"type":"last-prompt","lastPrompt":"{PROMPT}","leafUuid":{parent},"sessionId":"{session}"}}"#
        );
        lines += 1;
        let mut f = std::fs::File::create(proj_dir.join(format!("{session}.jsonl")))
            .expect("transcript file");
        f.write_all(out.as_bytes()).expect("write transcript");
        bytes += out.len() as u64;
        requests += n;
        sessions += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(path) = manifest {
        let models: Vec<String> = totals
            .iter()
            .map(|(m, t)| {
                format!(
                    r#"    "{m}": {{"requests": {}, "input": {}, "output": {}, "cache_read": {}, "cache_creation": {}, "cache_5m": {}, "cache_1h": {}}}"#,
                    t.requests,
                    t.input,
                    t.output,
                    t.cache_read,
                    t.cache_creation,
                    t.cache_5m,
                    t.cache_1h
                )
            })
            .collect();
        let json = format!(
            "{{\n  \"requests\": {requests},\n  \"sessions\": {sessions},\n  \"lines\": {lines},\n  \
             \"bytes\": {bytes},\n  \"seconds\": {secs:.1},\n  \"models\": {{\n{}\n  }}\n}}\n",
            models.join(",\n")
        );
        std::fs::write(path, json).expect("manifest");
    }
    println!(
        "gen_transcripts: {requests} requests, {sessions} sessions, {lines} lines, {:.2} GB in {secs:.1} s",
        bytes as f64 / 1e9
    );
}
