// Usage logs: filters, totals from /api/log/self/stat, pagination, CSV export of the filtered rows.
import { get, query } from "../api.js";
import { html, useState, useLoad, Message, Quota, Pager, fmtTime, fmtInt } from "../ui.js";

const PAGE_SIZE = 20;
const EXPORT_MAX_ROWS = 10000;
export const LOG_TYPES = { 0: "All", 1: "Top-up", 2: "Consume", 3: "Management", 4: "System", 5: "Error" };
const COLUMNS = ["created_at", "type", "token_name", "model_name", "prompt_tokens", "completion_tokens", "quota", "use_time_ms", "is_stream", "group", "ip", "request_id", "content"];

function ts(local) {
  const ms = Date.parse(local);
  return local && !Number.isNaN(ms) ? Math.floor(ms / 1000) : undefined;
}

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  // A leading =, +, - or @ would be run as a formula by spreadsheet programs.
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

export function toCsv(rows) {
  const lines = [COLUMNS.join(",")];
  for (const r of rows) lines.push(COLUMNS.map((c) => csvCell(c === "created_at" ? new Date(r[c] * 1000).toISOString() : r[c])).join(","));
  return `${lines.join("\r\n")}\r\n`;
}

export function Logs() {
  const start = new URLSearchParams(location.hash.split("?")[1] || "");
  const [draft, setDraft] = useState({ token_name: start.get("token") || "", model_name: "", start: "", end: "", type: "0" });
  const [filters, setFilters] = useState(draft);
  const [page, setPage] = useState(1);
  const [exporting, setExporting] = useState(null);
  const params = {
    token_name: filters.token_name.trim(), model_name: filters.model_name.trim(),
    start_timestamp: ts(filters.start), end_timestamp: ts(filters.end), type: filters.type === "0" ? undefined : filters.type,
  };
  const list = useLoad(() => get(`/api/log/self${query({ ...params, p: page, page_size: PAGE_SIZE })}`), [filters, page]);
  const stat = useLoad(() => get(`/api/log/self/stat${query(params)}`), [filters]);
  const set = (k) => (e) => setDraft({ ...draft, [k]: e.target.value });
  const exportCsv = async () => {
    setExporting({ busy: true });
    try {
      const rows = [];
      for (let p = 1; rows.length < EXPORT_MAX_ROWS; p += 1) {
        const chunk = await get(`/api/log/self${query({ ...params, p, page_size: 100 })}`);
        rows.push(...chunk.items);
        if (chunk.items.length < 100) break;
      }
      const url = URL.createObjectURL(new Blob([toCsv(rows)], { type: "text/csv" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `relaygate-logs-${new Date().toISOString().slice(0, 19).replaceAll(":", "")}.csv`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
      setExporting({ ok: `Exported ${rows.length} row(s)${rows.length >= EXPORT_MAX_ROWS ? " (the first 10,000; narrow the filters for the rest)" : ""}.` });
    } catch (err) {
      setExporting({ error: err });
    }
  };
  const items = list.data ? list.data.items : [];
  return html`<div class="page-head"><h2>Logs</h2></div>
    <form class="toolbar panel" onSubmit=${(e) => { e.preventDefault(); setPage(1); setFilters(draft); }} id="log-filters">
      <label>Token name<input id="lf-token" value=${draft.token_name} onInput=${set("token_name")} /></label>
      <label>Model<input id="lf-model" value=${draft.model_name} onInput=${set("model_name")} /></label>
      <label>From<input id="lf-start" type="datetime-local" value=${draft.start} onInput=${set("start")} /></label>
      <label>To<input id="lf-end" type="datetime-local" value=${draft.end} onInput=${set("end")} /></label>
      <label>Type<select id="lf-type" value=${draft.type} onChange=${set("type")}>${Object.entries(LOG_TYPES).map(([v, l]) => html`<option value=${v}>${l}</option>`)}</select></label>
      <button class="primary" type="submit" id="lf-apply">Apply</button>
      <button type="button" id="lf-export" onClick=${exportCsv} disabled=${exporting && exporting.busy}>Export CSV</button>
    </form>
    <${Message} error=${list.error || stat.error || (exporting && exporting.error)} ok=${exporting && exporting.ok} />
    <div class="cards" id="log-stat">
      <div class="card"><div class="label">Quota (consumed)</div><div class="value">${stat.data ? html`<${Quota} q=${stat.data.quota} />` : "…"}</div></div>
      <div class="card"><div class="label">Requests / min</div><div class="value">${stat.data ? fmtInt(stat.data.rpm) : "…"}</div></div>
      <div class="card"><div class="label">Tokens / min</div><div class="value">${stat.data ? fmtInt(stat.data.tpm) : "…"}</div></div>
    </div>
    <div class="panel table-wrap" aria-busy=${list.loading ? "true" : "false"}>
      <table id="logs-table" class="rows"><caption class="visually-hidden">Log entries</caption>
        <thead><tr><th>Time</th><th>Type</th><th>Token</th><th>Model</th><th class="num">Prompt</th><th class="num">Completion</th><th class="num">Quota</th><th class="opt">Duration</th><th class="opt">Details</th></tr></thead>
        <tbody>${items.map((l) => html`<tr key=${`${l.id}-${l.created_at}`}>
          <td data-label="Time">${fmtTime(l.created_at)}</td><td data-label="Type">${LOG_TYPES[l.type] || l.type}</td><td data-label="Token">${l.token_name || "—"}</td><td data-label="Model">${l.model_name || "—"}</td>
          <td class="num" data-label="Prompt">${fmtInt(l.prompt_tokens)}</td><td class="num" data-label="Completion">${fmtInt(l.completion_tokens)}</td><td class="num" data-label="Quota"><${Quota} q=${l.quota} /></td>
          <td class="opt">${(l.use_time_ms / 1000).toFixed(2)} s</td><td class="opt">${l.content}</td></tr>`)}
        </tbody></table>
      ${!list.loading && items.length === 0 && html`<p>No log entries match these filters.</p>`}
      ${list.data && html`<${Pager} page=${page} size=${PAGE_SIZE} total=${list.data.total} onPage=${setPage} />`}
    </div>`;
}
