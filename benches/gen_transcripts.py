#!/usr/bin/env python3
"""Generates Claude Code transcripts (`<dir>/projects/<cwd>/<session>.jsonl`) for the history
benchmark (benches/history-vs-ccusage.sh): N API requests over several projects, sessions and
days, in the line format the real Claude Code 2.1.197 and 2.1.332 write.

The format was taken from transcripts the real binaries wrote against the fake Messages API of
tests/support/anthropic.rs (CLAUDE_CONFIG_DIR in a temp dir, print-mode turns with a Bash tool
call): `user` prompt and tool-result lines, one `assistant` line per content block of a
response — each repeating the response's message id, request id and whole `usage` (with the
5-minute / 1-hour `cache_creation` split) — and the bookkeeping lines (`queue-operation`,
`last-prompt`; on 2.1.332 also `api-request`, `atis-latch`, `cost-state`). The fake API answers
with one block; real responses often have two or three (thinking, text, tool_use), which is what
makes transcripts repeat usage, so responses here have one to three.

Writes a manifest (JSON, to --manifest) with the true totals per model: the figures both
ccusage and `claude-telemetry import` must reproduce. Deterministic for a given --seed.
Usage: gen_transcripts.py DIR [--requests N] [--seed S] [--manifest FILE]
"""

import argparse
import json
import os
import random
import time

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
PROJECTS = ["api", "web", "infra", "mobile", "data", "ml", "docs", "billing", "auth",
            "search", "cli", "sdk"]
BRANCHES = ["main", "main", "main", "feature/import", "fix/flaky-ci", "HEAD"]
# (model, share of sessions using it as the main model); one call in ten is a haiku
# auxiliary call (titles, summaries) as claude makes them.
MAIN_MODELS = [("claude-sonnet-4-6", 0.6), ("claude-opus-4-8", 0.4)]
AUX_MODEL = "claude-haiku-4-5"
FIRST_DAY = 1792454400  # 2026-10-19T00:00:00Z
DAYS = 45

THINKING = ("Let me look at how the module handles this case before changing it; the tests "
            "around it will tell which behaviour callers rely on.")
TEXT = ("I updated the function to return early when the input is empty and added a test "
        "that covers the case. The rest of the module is unchanged.")
TOOL_RESULT = "running 12 tests\\ntest result: ok. 12 passed; 0 failed"


# Hex digits spelled in the base58 alphabet (no 0): ids look like Anthropic's and cost one
# getrandbits call instead of one random choice per character.
HEX_TO_B58 = str.maketrans("0123456789abcdef", "ZLkW5Jq8nPx4rT9s")


def rid(rng, prefix, n):
    return prefix + format(rng.getrandbits(4 * n), "0%dx" % n).translate(HEX_TO_B58)


def uuid(rng):
    h = "%032x" % rng.getrandbits(128)
    return "%s-%s-4%s-8%s-%s" % (h[:8], h[8:12], h[13:16], h[17:20], h[20:32])


_ISO_CACHE = {}


def iso(t):
    ms = int(round(t * 1000))
    sec = ms // 1000
    head = _ISO_CACHE.get(sec)
    if head is None:
        if len(_ISO_CACHE) > 100_000:
            _ISO_CACHE.clear()
        head = _ISO_CACHE[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return head + ".%03dZ" % (ms % 1000)


def usage_json(v332, u):
    extra = '"output_tokens_details":{"thinking_tokens":%d},' % u["thinking"] if v332 else ""
    tail = ',"fallback_credit":null' if v332 else ""
    return ('{"input_tokens":%d,"cache_creation_input_tokens":%d,"cache_read_input_tokens":%d,'
            '"output_tokens":%d,%s"server_tool_use":{"web_search_requests":0,'
            '"web_fetch_requests":0},"service_tier":"standard","cache_creation":'
            '{"ephemeral_1h_input_tokens":%d,"ephemeral_5m_input_tokens":%d},'
            '"inference_geo":"","iterations":[],"speed":"standard"%s}'
            % (u["input"], u["c5m"] + u["c1h"], u["read"], u["output"], extra, u["c1h"],
               u["c5m"], tail))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--manifest")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    totals = {}
    requests = sessions = lines = bytes_written = 0
    started = time.time()
    while requests < args.requests:
        n = min(rng.randint(10, 150), args.requests - requests)
        project = rng.choice(PROJECTS)
        cwd = "/home/dev/src/" + project
        proj_dir = os.path.join(args.dir, "projects", cwd.replace("/", "-"))
        os.makedirs(proj_dir, exist_ok=True)
        session = uuid(rng)
        v332 = rng.random() < 0.7
        version = "2.1.332" if v332 else "2.1.197"
        branch = rng.choice(BRANCHES)
        main_model = MAIN_MODELS[0][0] if rng.random() < MAIN_MODELS[0][1] else MAIN_MODELS[1][0]
        t = FIRST_DAY + rng.randrange(DAYS) * 86400 + rng.uniform(7 * 3600, 20 * 3600)
        common = ('"userType":"external","entrypoint":"cli","cwd":"%s","sessionId":"%s",'
                  '"version":"%s","gitBranch":"%s"}' % (cwd, session, version, branch))
        out = []
        parent = "null"
        prompt_id = None
        for i in range(n):
            if i % 6 == 0:
                prompt_id = uuid(rng)
                u_id = uuid(rng)
                out.append('{"type":"queue-operation","operation":"enqueue","timestamp":"%s",'
                           '"sessionId":"%s","content":"continue with the next step"}'
                           % (iso(t), session))
                out.append('{"parentUuid":%s,"isSidechain":false,"promptId":"%s","type":"user",'
                           '"message":{"role":"user","content":"continue with the next step"},'
                           '"uuid":"%s","timestamp":"%s","permissionMode":"default",%s'
                           % (parent, prompt_id, u_id, iso(t), common))
                parent = '"%s"' % u_id
                t += rng.uniform(0.5, 3)
            aux = rng.random() < 0.1
            model = AUX_MODEL if aux else main_model
            c5m = rng.randrange(6000)
            u = {"input": rng.randint(1, 400), "output": rng.randint(20, 2500),
                 "read": rng.randrange(120_000), "c5m": c5m,
                 "c1h": rng.randrange(3000) if rng.random() < 0.25 else 0,
                 "thinking": 0}
            blocks = rng.choice([["tool_use"], ["tool_use"], ["text", "tool_use"],
                                 ["thinking", "tool_use"], ["thinking", "text", "tool_use"],
                                 ["text"]])
            if "thinking" in blocks:
                u["thinking"] = min(u["output"] // 2, 800)
            msg_id = rid(rng, "msg_01", 22)
            req_id = rid(rng, "req_011C", 18)
            usage = usage_json(v332, u)
            if v332 and i % 3 == 0:
                out.append('{"type":"api-request","sessionId":"%s","id":"%s","timestamp":"%s",'
                           '"version":"2.1.332","querySource":"repl_main_thread","shapeHash":'
                           '"%064x","params":{"model":"%s","max_tokens":32000,"thinking":'
                           '{"type":"adaptive","display":"omitted"},"output_config":'
                           '{"effort":"high"}},"thread":{"type":"none"},"keep":1}'
                           % (session, uuid(rng), iso(t), rng.getrandbits(256), model))
            t += rng.uniform(2, 30)
            tool_id = rid(rng, "toolu_01", 22)
            for b, kind in enumerate(blocks):
                if kind == "thinking":
                    content = ('{"type":"thinking","thinking":"%s","signature":"%s"}'
                               % (THINKING, rid(rng, "Eu", 40)))
                elif kind == "text":
                    content = '{"type":"text","text":"%s"}' % TEXT
                else:
                    content = ('{"type":"tool_use","id":"%s","name":"Bash","input":{"command":'
                               '"cargo test --lib","description":"Run the unit tests"}}' % tool_id)
                last = b == len(blocks) - 1
                stop = ('"tool_use"' if kind == "tool_use" else '"end_turn"') if last else "null"
                a_id = uuid(rng)
                extra = ('"apiBlockIndex":%d,"requestId":"%s","requestRef":"%s","requestedModel":'
                         '"%s","promptCacheRequested":"5m","type":"assistant","uuid":"%s",'
                         '"timestamp":"%s","effort":"high","perTurnEffort":null,'
                         '"madeBy":"model",' % (b, req_id, uuid(rng), model, a_id, iso(t))
                         if v332 else
                         '"requestId":"%s","type":"assistant","uuid":"%s","timestamp":"%s",'
                         % (req_id, a_id, iso(t)))
                out.append('{"parentUuid":%s,"isSidechain":false,"message":{"id":"%s","type":'
                           '"message","role":"assistant","model":"%s","content":[%s],'
                           '"stop_reason":%s,"stop_sequence":null,"usage":%s,'
                           '"stop_details":null},%s%s'
                           % (parent, msg_id, model, content, stop, usage, extra, common))
                parent = '"%s"' % a_id
                t += rng.uniform(0.05, 0.5)
            if blocks[-1] == "tool_use":
                r_id = uuid(rng)
                out.append('{"parentUuid":%s,"isSidechain":false,"promptId":"%s","type":"user",'
                           '"message":{"role":"user","content":[{"tool_use_id":"%s","type":'
                           '"tool_result","content":"%s","is_error":false}]},"uuid":"%s",'
                           '"timestamp":"%s","toolUseResult":{"stdout":"%s","stderr":"",'
                           '"interrupted":false,"isImage":false,"noOutputExpected":false},'
                           '"sourceToolAssistantUUID":%s,%s'
                           % (parent, prompt_id, tool_id, TOOL_RESULT, r_id, iso(t), TOOL_RESULT,
                              parent, common))
                parent = '"%s"' % r_id
                t += rng.uniform(0.5, 5)
            m = totals.setdefault(model, {"requests": 0, "input": 0, "output": 0, "cache_read": 0,
                                          "cache_creation": 0, "cache_5m": 0, "cache_1h": 0})
            m["requests"] += 1
            m["input"] += u["input"]
            m["output"] += u["output"]
            m["cache_read"] += u["read"]
            m["cache_creation"] += u["c5m"] + u["c1h"]
            m["cache_5m"] += u["c5m"]
            m["cache_1h"] += u["c1h"]
        out.append('{"type":"last-prompt","lastPrompt":"continue with the next step",'
                   '"leafUuid":%s,"sessionId":"%s"}' % (parent, session))
        text = "\n".join(out) + "\n"
        with open(os.path.join(proj_dir, session + ".jsonl"), "w") as f:
            f.write(text)
        bytes_written += len(text)
        lines += len(out)
        requests += n
        sessions += 1
    manifest = {"requests": requests, "sessions": sessions, "lines": lines,
                "bytes": bytes_written, "models": totals,
                "seconds": round(time.time() - started, 1)}
    if args.manifest:
        with open(args.manifest, "w") as f:
            json.dump(manifest, f, indent=1)
    print("gen_transcripts: %d requests, %d sessions, %d lines, %.2f GB in %.1f s"
          % (requests, sessions, lines, bytes_written / 1e9, time.time() - started))


if __name__ == "__main__":
    main()
