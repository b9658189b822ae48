// Grafana's side of a dashboard query, computed with Grafana's own code where it ships on npm:
//   - `$__interval` and the step: rangeUtil.calculateInterval from @grafana/data with the
//     panel's maxDataPoints and, as lower limit, the larger of the panel's min interval and
//     the datasource's timeInterval; then, as Grafana's Prometheus backend does
//     (pkg/promlib/models/query.go calculatePrometheusInterval), never below the "safe"
//     interval range/11000. `$__range` is the range rounded to seconds (InterpolateVariables);
//     the caller aligns start and end down to the step (AlignTimeRange);
//   - `${var:regex}`: escapeRegex from @grafana/data, one value as is, several joined as
//     `(a|b)`, a custom All value (`allValue`) passed through unformatted — the rules of
//     @grafana/scenes formatRegistry (`regex`) and CustomAllValue;
//   - variable references found with Grafana's variable regex (scenes `VARIABLE_REGEX`);
//   - parse errors from the grammars Grafana's editors use (@prometheus-io/lezer-promql,
//     @grafana/lezer-logql), plus the escapes of double-quoted LogQL strings, which Loki
//     reads with Go's strconv.Unquote (the lezer grammar accepts any backslash).
// stdin: {"queries": [{id, lang, expr, vars: {name: {value: [..] | "$__all", allValue}},
//          fromMs, toMs, maxDataPoints, minInterval, dsInterval}]}
// stdout: [{id, expr, interval, intervalMs, errors: [..]}]
// Or, with {tables: [..]} on stdin, a table panel's transformations (runTables below).
"use strict";
const { rangeUtil, dateTime, escapeRegex } = require("@grafana/data");
const promql = require("@prometheus-io/lezer-promql").parser;
const logql = require("@grafana/lezer-logql").parser;

const VARIABLE_REGEX = /\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\${(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?}/g;

function formatRegex(value) {
  if (typeof value === "string") return escapeRegex(value);
  const escaped = value.map((v) => escapeRegex(String(v)));
  return escaped.length === 1 ? escaped[0] : "(" + escaped.join("|") + ")";
}

function goUnquoteOk(lit) {
  // Go strconv.Unquote on a double-quoted literal: the escapes it accepts.
  const body = lit.slice(1, -1);
  const re = /\\(?:[abfnrtv\\"']|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3})|\\/g;
  let m;
  while ((m = re.exec(body)) !== null) if (m[0] === "\\") return false;
  return true;
}

function parseErrors(lang, expr) {
  const tree = (lang === "logql" ? logql : promql).parse(expr);
  const errors = [];
  tree.iterate({
    enter: (n) => {
      if (n.type.isError) errors.push(`syntax error at ${n.from}: ${JSON.stringify(expr.slice(n.from, n.from + 20))}`);
      if (lang === "logql" && n.type.name === "String") {
        const lit = expr.slice(n.from, n.to);
        if (lit.startsWith('"') && !goUnquoteOk(lit)) errors.push(`invalid escape in ${lit}`);
      }
    },
  });
  return errors;
}

function run(q) {
  const range = { from: dateTime(q.fromMs), to: dateTime(q.toMs), raw: {} };
  const low = [q.minInterval, q.dsInterval].filter(Boolean)
    .sort((a, b) => rangeUtil.intervalToMs(b) - rangeUtil.intervalToMs(a))[0];
  let { interval, intervalMs } = rangeUtil.calculateInterval(range, q.maxDataPoints, low);
  const safeMs = rangeUtil.roundInterval((q.toMs - q.fromMs) / 11000);
  if (safeMs > intervalMs) {
    intervalMs = safeMs;
    interval = rangeUtil.secondsToHms(safeMs / 1000);
  }
  const rangeS = Math.round((q.toMs - q.fromMs) / 1000);
  const builtins = {
    __range: `${rangeS}s`,
    __range_s: `${rangeS}`,
    __range_ms: `${q.toMs - q.fromMs}`,
    __interval: interval,
    __interval_ms: `${intervalMs}`,
    __auto: interval,
  };
  const errors = [];
  const expr = q.expr.replace(VARIABLE_REGEX, (match, v1, v2, fmt2, v3, _path, fmt3) => {
    const name = v1 || v2 || v3;
    const fmt = fmt2 || fmt3;
    if (name in builtins) return builtins[name];
    const v = q.vars[name];
    if (!v) {
      errors.push(`unknown variable ${match}`);
      return match;
    }
    if (fmt !== "regex") {
      errors.push(`${match}: only the regex format is modelled`);
      return match;
    }
    if (v.value === "$__all") {
      if (typeof v.allValue === "string" && v.allValue !== "") return v.allValue;
      if (!Array.isArray(v.options)) {
        errors.push(`${match}: All without a custom allValue needs the variable's options`);
        return match;
      }
      return formatRegex(v.options);
    }
    return formatRegex(v.value);
  });
  return { id: q.id, expr, interval, intervalMs, errors: errors.concat(parseErrors(q.lang, expr)) };
}

// A table panel's transformations, run by @grafana/data's own transformDataFrame on the frames
// Grafana's Prometheus datasource makes of instant queries with format "table"
// (transformDFToTable: Time, the labels sorted by name, then `Value #<refId>`).
// {tables: [{id, frames: [{refId, fields: [{name, type, values}]}], transformations}]}
//   -> [{id, columns: [{name, values}]}]
async function runTables(tables) {
  const d = require("@grafana/data");
  const { lastValueFrom } = require("rxjs");
  const byId = new Map();
  for (const t of Object.values(d.standardTransformers)) byId.set(t.id, t);
  d.standardTransformersRegistry.setInit(() =>
    [...byId.values()].map((t) => ({ id: t.id, aliasIds: t.aliasIds, transformation: () => t })));
  // A scenes dashboard (Grafana 12+): transformation options are taken as they are.
  global.window = { __grafanaSceneContext: {} };
  const out = [];
  for (const t of tables) {
    const frames = t.frames.map((f) => d.toDataFrame(f));
    const result = await lastValueFrom(d.transformDataFrame(t.transformations, frames, { interpolate: (s) => s }));
    out.push({
      id: t.id,
      columns: result.flatMap((f) => f.fields.map((x) => ({
        name: d.getFieldDisplayName(x, f, result),
        values: Array.from(x.values, (v) => (v === undefined ? null : v)),
      }))),
    });
  }
  return out;
}

let input = "";
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", async () => {
  const { queries, tables } = JSON.parse(input);
  const out = tables ? await runTables(tables) : queries.map(run);
  process.stdout.write(JSON.stringify(out));
});
