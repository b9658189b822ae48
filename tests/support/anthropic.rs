//! A fake Anthropic Messages API, deterministic and recording, for driving the real claude.
//!
//! What Claude Code 2.1.197 calls when `ANTHROPIC_BASE_URL` points here (found by experiment,
//! not logged in, `ANTHROPIC_API_KEY` set):
//! - `HEAD /` — a connectivity probe at start (answered 200, empty).
//! - `POST /v1/messages?beta=true` with `"stream": true` — every model call. Main-loop calls
//!   offer tools (25–28 of them); the auxiliary session-title call offers none and asks for
//!   `output_config.format = json_schema` with a `title` field. The newest message of a main
//!   call may be a `system` role message (agent list), so the prompt is the newest `user` one.
//! - Nothing else in `-p` or interactive turns; anything else is answered 404 quickly and listed
//!   by [`FakeAnthropic::unknown_requests`] so a new release's probes show up in test output.
//!
//! Claude computes cost itself from the usage it is sent: see [`Pricing`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use super::background::{Background, Serve, listen};

/// Token usage of one response, as sent in `message_start` / `message_delta`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `input_tokens`
    pub input: u64,
    /// `output_tokens` (final count, sent in `message_delta`)
    pub output: u64,
    /// `cache_read_input_tokens`
    pub cache_read: u64,
    /// `cache_creation_input_tokens`
    pub cache_creation: u64,
    /// `cache_creation.ephemeral_5m_input_tokens` and `…_1h_…`, the split the real API sends
    /// beside the total (5m + 1h = `cache_creation` there); None: no `cache_creation` object.
    pub cache_creation_split: Option<(u64, u64)>,
}

impl Usage {
    /// Component-wise sum, for totals over many calls.
    pub fn add(self, other: Usage) -> Usage {
        Usage {
            input: self.input + other.input,
            output: self.output + other.output,
            cache_read: self.cache_read + other.cache_read,
            cache_creation: self.cache_creation + other.cache_creation,
            cache_creation_split: match (self.cache_creation_split, other.cache_creation_split) {
                (None, None) => None,
                (a, b) => {
                    let (a5, a1) = a.unwrap_or_default();
                    let (b5, b1) = b.unwrap_or_default();
                    Some((a5 + b5, a1 + b1))
                }
            },
        }
    }

    /// The value for a `type` attribute of `claude_code.token.usage`
    /// (`input`, `output`, `cacheRead`, `cacheCreation`); None for other names.
    pub fn by_metric_type(&self, kind: &str) -> Option<u64> {
        match kind {
            "input" => Some(self.input),
            "output" => Some(self.output),
            "cacheRead" => Some(self.cache_read),
            "cacheCreation" => Some(self.cache_creation),
            _ => None,
        }
    }

    /// What claude charges for this usage at `pricing`, in USD.
    pub fn cost_usd(&self, pricing: Pricing) -> f64 {
        (self.input as f64 * pricing.input
            + self.output as f64 * pricing.output
            + self.cache_creation as f64 * pricing.cache_write
            + self.cache_read as f64 * pricing.cache_read)
            / 1_000_000.0
    }
}

/// USD per million tokens that claude 2.1.197 applies to a model when it computes `cost_usd`
/// and `claude_code.cost.usage` from the usage an API response reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    /// input tokens
    pub input: f64,
    /// output tokens
    pub output: f64,
    /// cache creation (write) tokens
    pub cache_write: f64,
    /// cache read tokens
    pub cache_read: f64,
}

impl Pricing {
    /// Rates for the models whose cost was checked against claude 2.1.197's own `cost_usd`
    /// (fake usage 101 in / 23 out / 13 cache read / 7 cache write gave 0.00113025 for
    /// claude-opus-4-8, 0.00067815 for claude-sonnet-4-6, 0.00022605 for claude-haiku-4-5).
    /// Accepts the metric form with a context suffix (`claude-opus-4-8[1m]`).
    pub fn for_model(model: &str) -> Option<Pricing> {
        let bare = model.split('[').next().unwrap_or(model);
        let (input, output) = match bare {
            "claude-opus-4-8" => (5.0, 25.0),
            "claude-sonnet-4-6" => (3.0, 15.0),
            "claude-haiku-4-5" => (1.0, 5.0),
            _ => return None,
        };
        Some(Pricing {
            input,
            output,
            cache_write: input * 1.25,
            cache_read: input * 0.1,
        })
    }
}

/// Whether a call was claude's main conversation loop or an auxiliary query (session title).
///
/// Decided by whether the request offers tools; this matches the `query_source` attribute
/// (`main` / `auxiliary`) claude puts on its cost and token metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Main,
    Auxiliary,
}

impl QueryKind {
    /// The `query_source` attribute value claude uses on metrics for this kind.
    pub fn metric_attribute(self) -> &'static str {
        match self {
            QueryKind::Main => "main",
            QueryKind::Auxiliary => "auxiliary",
        }
    }
}

/// What the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A text block with this text.
    Text(String),
    /// A Bash `tool_use` block running this command.
    Bash {
        tool_use_id: String,
        command: String,
    },
    /// An HTTP error with this status and an Anthropic error body (no usage).
    Error(u16),
}

/// One recorded `POST /v1/messages`.
#[derive(Debug, Clone)]
pub struct ApiCall {
    /// 0-based order of arrival.
    pub index: usize,
    /// Path and query as sent (`/v1/messages?beta=true`).
    pub path: String,
    /// `model` of the request.
    pub model: String,
    /// Whether claude asked for SSE.
    pub stream: bool,
    /// Main loop or auxiliary.
    pub query: QueryKind,
    /// What was answered.
    pub reply: Reply,
    /// The usage reported in the answer.
    pub usage: Usage,
    /// The `request-id` header of the answer; claude reports it as `request_id` on `api_request`.
    pub request_id: String,
    /// The whole request body, for tests that look at what claude sent.
    pub body: Value,
}

/// Text of the answer to a plain prompt; tests wait for it on screen.
pub const ANSWER_TEXT: &str = "Fake answer: hello from the test API.";
/// Text of the answer after a tool result came back.
pub const AFTER_TOOL_TEXT: &str = "Fake answer: the command ran.";
/// Marker in a prompt that makes the fake answer with a Bash tool call running the rest of the line.
pub const RUN_BASH: &str = "RUN_BASH: ";
/// Marker in a prompt that makes the fake answer main-loop calls with this HTTP error status
/// (`API_ERROR: 400`); 400 is not retried by claude, so `-p` ends at once with exit code 1.
pub const API_ERROR: &str = "API_ERROR: ";

type UsagePlan = dyn Fn(usize, QueryKind) -> Usage + Send + Sync;

struct ApiState {
    calls: Mutex<Vec<ApiCall>>,
    unknown: Mutex<Vec<String>>,
    plan: Box<UsagePlan>,
    /// Extra headers on every `/v1/messages` answer (see [`FakeAnthropic::set_answer_headers`]).
    answer_headers: Mutex<Vec<(String, String)>>,
}

/// The running fake API; dropping it stops the server.
pub struct FakeAnthropic {
    state: Arc<ApiState>,
    addr: SocketAddr,
    _server: Background,
}

/// The default usage plan: every response gets distinct numbers derived from its index, so a
/// sum over calls identifies which calls were counted.
pub fn default_usage(index: usize, _kind: QueryKind) -> Usage {
    let n = index as u64;
    Usage {
        input: 1201 + 100 * n,
        output: 31 + 10 * n,
        cache_read: 512 + 64 * n,
        cache_creation: 77 + 3 * n,
        cache_creation_split: None,
    }
}

impl FakeAnthropic {
    /// Starts the fake on 127.0.0.1 with [`default_usage`].
    pub fn start() -> FakeAnthropic {
        FakeAnthropic::with_usage(default_usage)
    }

    /// Starts the fake with a usage plan: `plan(index, kind)` gives the usage of the response
    /// to the `index`-th call.
    pub fn with_usage(
        plan: impl Fn(usize, QueryKind) -> Usage + Send + Sync + 'static,
    ) -> FakeAnthropic {
        let state = Arc::new(ApiState {
            calls: Mutex::new(Vec::new()),
            unknown: Mutex::new(Vec::new()),
            plan: Box::new(plan),
            answer_headers: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .fallback(unknown)
            .with_state(state.clone());
        let (server, addrs) = Background::spawn("fake-anthropic", move || async move {
            let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            let addr = listener.local_addr()?;
            let serve: Serve = Box::pin(async move {
                let _ = axum::serve(listener, app).await;
            });
            Ok((vec![addr], serve))
        })
        .expect("start the fake Anthropic API on 127.0.0.1");
        FakeAnthropic {
            state,
            addr: addrs[0],
            _server: server,
        }
    }

    /// Value for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the extra headers every later `/v1/messages` answer carries (replacing those set
    /// before), e.g. the plan usage-limit headers a subscription session gets from the real API
    /// ([`unified_limit_headers`]). Panics on a name or value that is not a valid header.
    pub fn set_answer_headers(&self, headers: &[(String, String)]) {
        for (k, v) in headers {
            assert!(
                axum::http::HeaderName::from_bytes(k.as_bytes()).is_ok()
                    && HeaderValue::from_str(v).is_ok(),
                "not a valid answer header: {k}: {v}"
            );
        }
        *lock(&self.state.answer_headers) = headers.to_vec();
    }

    /// Every `/v1/messages` call so far, in order.
    pub fn calls(&self) -> Vec<ApiCall> {
        lock(&self.state.calls).clone()
    }

    /// Requests to paths the fake does not implement (`METHOD path`), in order.
    pub fn unknown_requests(&self) -> Vec<String> {
        lock(&self.state.unknown).clone()
    }

    /// Sum of the usage answered, over all calls or those of one kind.
    pub fn total_usage(&self, kind: Option<QueryKind>) -> Usage {
        lock(&self.state.calls)
            .iter()
            .filter(|c| kind.is_none_or(|k| c.query == k))
            .fold(Usage::default(), |acc, c| acc.add(c.usage))
    }

    /// What claude should have charged for every call, from the usage answered and the
    /// verified [`Pricing`] of each call's model. Panics on a model without known pricing.
    pub fn expected_cost_usd(&self, kind: Option<QueryKind>) -> f64 {
        lock(&self.state.calls)
            .iter()
            .filter(|c| kind.is_none_or(|k| c.query == k))
            .map(|c| {
                let pricing = Pricing::for_model(&c.model)
                    .unwrap_or_else(|| panic!("no verified pricing for model {:?}", c.model));
                c.usage.cost_usd(pricing)
            })
            .sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The newest `user` message's content blocks (a string content becomes one text block).
fn newest_user_blocks(request: &Value) -> Vec<Value> {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return Vec::new();
    };
    let Some(user) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return Vec::new();
    };
    match user.get("content") {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(blocks)) => blocks.clone(),
        _ => Vec::new(),
    }
}

fn decide_reply(request: &Value, index: usize) -> (QueryKind, Reply) {
    let tools: Vec<&str> = request
        .get("tools")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let kind = if tools.is_empty() {
        QueryKind::Auxiliary
    } else {
        QueryKind::Main
    };
    let wants_json = request
        .pointer("/output_config/format/type")
        .and_then(Value::as_str)
        == Some("json_schema");
    if wants_json {
        return (
            kind,
            Reply::Text(r#"{"title": "Fake session title"}"#.into()),
        );
    }
    let blocks = newest_user_blocks(request);
    let marker = |marker: &str| {
        blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .find_map(|text| {
                let at = text.find(marker)?;
                let rest = &text[at + marker.len()..];
                Some(rest.lines().next().unwrap_or("").trim().to_string())
            })
    };
    if kind == QueryKind::Main
        && let Some(status) = marker(API_ERROR).and_then(|s| s.parse::<u16>().ok())
    {
        return (kind, Reply::Error(status));
    }
    let has_tool_result = blocks
        .iter()
        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"));
    if has_tool_result {
        return (kind, Reply::Text(AFTER_TOOL_TEXT.into()));
    }
    if tools.contains(&"Bash")
        && let Some(command) = marker(RUN_BASH).filter(|c| !c.is_empty())
    {
        return (
            kind,
            Reply::Bash {
                tool_use_id: format!("toolu_fake_{index:04}"),
                command,
            },
        );
    }
    (kind, Reply::Text(ANSWER_TEXT.into()))
}

fn content_block(reply: &Reply) -> (Value, Value, Value, &'static str) {
    // (block as sent in content_block_start, the delta, the complete block, stop_reason)
    match reply {
        Reply::Error(_) => content_block(&Reply::Text(String::new())),
        Reply::Text(text) => (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": text}),
            json!({"type": "text", "text": text}),
            "end_turn",
        ),
        Reply::Bash {
            tool_use_id,
            command,
        } => {
            let input =
                json!({"command": command, "description": "Run the command the test asked for"});
            (
                json!({"type": "tool_use", "id": tool_use_id, "name": "Bash", "input": {}}),
                json!({"type": "input_json_delta", "partial_json": input.to_string()}),
                json!({"type": "tool_use", "id": tool_use_id, "name": "Bash", "input": input}),
                "tool_use",
            )
        }
    }
}

async fn messages(State(state): State<Arc<ApiState>>, uri: Uri, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.to_string(),
            );
        }
    };
    let call = {
        let mut calls = lock(&state.calls);
        let index = calls.len();
        let (query, reply) = decide_reply(&request, index);
        let usage = if matches!(reply, Reply::Error(_)) {
            Usage::default()
        } else {
            (state.plan)(index, query)
        };
        let call = ApiCall {
            index,
            path: uri.to_string(),
            model: request
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            stream: request.get("stream").and_then(Value::as_bool) == Some(true),
            query,
            reply,
            usage,
            request_id: format!("req_fake_{index:04}"),
            body: request,
        };
        calls.push(call.clone());
        call
    };
    if let Reply::Error(status) = call.reply {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = error_response(
            status,
            "invalid_request_error",
            "error requested by the test prompt",
        );
        if let Ok(v) = HeaderValue::from_str(&call.request_id) {
            response.headers_mut().insert("request-id", v);
        }
        add_answer_headers(&state, &mut response);
        return response;
    }
    let mut response = if call.stream {
        sse_response(&call)
    } else {
        json_response(&call)
    };
    add_answer_headers(&state, &mut response);
    response
}

fn add_answer_headers(state: &ApiState, response: &mut Response) {
    for (k, v) in lock(&state.answer_headers).iter() {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
}

/// The plan usage-limit headers the Messages API sends a subscription (OAuth) session, as
/// claude 2.1.197 and 2.1.332 read them (verified in both binaries): per window (`5h`, `7d`)
/// `anthropic-ratelimit-unified-<w>-utilization` as a fraction 0–1 and `-<w>-reset` as Unix
/// seconds (claude shows `utilization * 100` as the status line's `used_percentage`, 2.1.332
/// rounded to 0.1 and capped at 100), `-<w>-status` and the overall `-status` / `-reset` /
/// `-representative-claim`.
pub fn unified_limit_headers(
    five_hour: (f64, i64),
    seven_day: (f64, i64),
) -> Vec<(String, String)> {
    let mut h = vec![
        (
            "anthropic-ratelimit-unified-status".to_owned(),
            "allowed".to_owned(),
        ),
        (
            "anthropic-ratelimit-unified-reset".to_owned(),
            five_hour.1.to_string(),
        ),
        (
            "anthropic-ratelimit-unified-representative-claim".to_owned(),
            "five_hour".to_owned(),
        ),
    ];
    for (abbrev, (utilization, reset)) in [("5h", five_hour), ("7d", seven_day)] {
        let name = |part: &str| format!("anthropic-ratelimit-unified-{abbrev}-{part}");
        h.push((name("utilization"), utilization.to_string()));
        h.push((name("reset"), reset.to_string()));
        h.push((name("status"), "allowed".to_owned()));
    }
    h
}

fn sse_response(call: &ApiCall) -> Response {
    let (start_block, delta, _, stop_reason) = content_block(&call.reply);
    let message_id = format!("msg_fake_{:04}", call.index);
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": message_id, "type": "message", "role": "assistant", "model": call.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage_json(&call.usage, 1)
            }}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": start_block}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": call.usage.output}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    // One chunk per event, like the real API (chunked transfer, no Content-Length).
    let chunks: Vec<Result<Bytes, Infallible>> = events
        .iter()
        .map(|(name, data)| Ok(Bytes::from(format!("event: {name}\ndata: {data}\n\n"))))
        .collect();
    let mut response = Response::new(Body::from_stream(tokio_stream::iter(chunks)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&call.request_id) {
        headers.insert("request-id", v);
    }
    response
}

/// The `usage` object of a response (`output` is 1 in a stream's `message_start`), with the
/// `cache_creation` split when the plan gives one.
fn usage_json(usage: &Usage, output: u64) -> Value {
    let mut u = json!({
        "input_tokens": usage.input,
        "output_tokens": output,
        "cache_creation_input_tokens": usage.cache_creation,
        "cache_read_input_tokens": usage.cache_read
    });
    if let Some((m5, h1)) = usage.cache_creation_split {
        u["cache_creation"] = json!({
            "ephemeral_5m_input_tokens": m5,
            "ephemeral_1h_input_tokens": h1
        });
    }
    u
}

fn json_response(call: &ApiCall) -> Response {
    let (_, _, block, stop_reason) = content_block(&call.reply);
    let body = json!({
        "id": format!("msg_fake_{:04}", call.index), "type": "message", "role": "assistant",
        "model": call.model, "content": [block], "stop_reason": stop_reason, "stop_sequence": null,
        "usage": usage_json(&call.usage, call.usage.output)
    });
    let mut response = json_body(StatusCode::OK, &body);
    if let Ok(v) = HeaderValue::from_str(&call.request_id) {
        response.headers_mut().insert("request-id", v);
    }
    response
}

async fn count_tokens(body: Bytes) -> Response {
    // A rough count is enough: claude uses it only for context-size estimates.
    json_body(
        StatusCode::OK,
        &json!({"input_tokens": (body.len() / 4).max(1)}),
    )
}

async fn unknown(State(state): State<Arc<ApiState>>, method: Method, uri: Uri) -> Response {
    if method == Method::HEAD && uri.path() == "/" {
        // Claude's start-up connectivity probe.
        return Response::new(Body::empty());
    }
    let line = format!("{method} {uri}");
    eprintln!("fake Anthropic API: unhandled request {line}");
    lock(&state.unknown).push(line);
    error_response(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "not implemented by the fake API",
    )
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    json_body(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

fn json_body(status: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
