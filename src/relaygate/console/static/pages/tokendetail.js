// One token: live used/remaining (refreshed every 5 s), recent activity, a usage chart built
// from the token's log rows, and the curl / OpenAI SDK snippets for it.
import { get, query } from "../api.js";
import { html, useState, useLoad, Message, Quota, Status, fmtExpiry, fmtTime, fmtInt, fmtCredits } from "../ui.js";

const LIVE_MS = 5000;
const CHART_ROWS = 100;

function buckets(logs, unit) {
  const size = unit === "day" ? 86400 : 3600;
  const count = unit === "day" ? 14 : 24;
  const now = Math.floor(Date.now() / 1000 / size) * size;
  const out = Array.from({ length: count }, (_, i) => ({ start: now - (count - 1 - i) * size, requests: 0, quota: 0 }));
  for (const l of logs) {
    const i = count - 1 - Math.floor((now - Math.floor(l.created_at / size) * size) / size);
    if (i >= 0 && i < count) {
      out[i].requests += 1;
      out[i].quota += l.quota;
    }
  }
  return out;
}

function Chart({ logs }) {
  const [unit, setUnit] = useState("hour");
  const data = buckets(logs, unit);
  const maxR = Math.max(1, ...data.map((d) => d.requests));
  const maxQ = Math.max(1, ...data.map((d) => d.quota));
  const w = 100 / data.length;
  const label = (d) => (unit === "day" ? new Date(d.start * 1000).toLocaleDateString() : new Date(d.start * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  return html`<section class="panel chart" aria-labelledby="chart-title">
    <div class="page-head"><h3 id="chart-title">Usage</h3>
      <div class="tabs" role="group" aria-label="Chart period">
        <button type="button" aria-pressed=${unit === "hour" ? "true" : "false"} onClick=${() => setUnit("hour")}>Per hour (24 h)</button>
        <button type="button" aria-pressed=${unit === "day" ? "true" : "false"} onClick=${() => setUnit("day")}>Per day (14 d)</button>
      </div></div>
    <svg viewBox="0 0 100 50" preserveAspectRatio="none" role="img" aria-label=${`Requests (blue) and quota (green) per ${unit}; most recent on the right`}>
      ${data.map((d, i) => html`<g key=${d.start}>
        <title>${label(d)}: ${d.requests} requests, ${fmtInt(d.quota)} quota</title>
        <rect class="bar" x=${i * w + w * 0.1} width=${w * 0.38} y=${50 - (d.requests / maxR) * 48} height=${(d.requests / maxR) * 48} />
        <rect class="bar2" x=${i * w + w * 0.52} width=${w * 0.38} y=${50 - (d.quota / maxQ) * 48} height=${(d.quota / maxQ) * 48} />
      </g>`)}
    </svg>
    <p class="hint">Blue: requests (max ${maxR}); green: quota (max ${fmtInt(maxQ)} = ${fmtCredits(maxQ)}). From the token's last ${CHART_ROWS} log rows.</p>
  </section>`;
}

export function Activity({ rows, id = "activity" }) {
  if (!rows.length) return html`<p>No requests yet.</p>`;
  return html`<div class="table-wrap"><table id=${id} class="rows">
    <thead><tr><th>Time</th><th>Model</th><th class="num">Prompt</th><th class="num">Completion</th><th class="num">Quota</th><th class="opt">Duration</th><th class="opt">IP</th></tr></thead>
    <tbody>${rows.map((l) => html`<tr key=${l.id}>
      <td data-label="Time">${fmtTime(l.created_at)}</td><td data-label="Model">${l.model_name || "—"}</td><td class="num" data-label="Prompt">${fmtInt(l.prompt_tokens)}</td>
      <td class="num" data-label="Completion">${fmtInt(l.completion_tokens)}</td><td class="num" data-label="Quota"><${Quota} q=${l.quota} /></td>
      <td class="opt">${(l.use_time_ms / 1000).toFixed(2)} s${l.is_stream ? " (stream)" : ""}</td><td class="opt">${l.ip || "—"}</td></tr>`)}
    </tbody></table></div>`;
}

function Snippets({ t }) {
  const base = location.origin;
  const model = t.model_limits_enabled && t.models.length ? t.models[0] : "gpt-4o-mini";
  const curl = `curl ${base}/v1/chat/completions \\
  -H "Authorization: Bearer $RELAYGATE_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello"}]}'`;
  const py = `import os
from openai import OpenAI

client = OpenAI(base_url="${base}/v1", api_key=os.environ["RELAYGATE_KEY"])
reply = client.chat.completions.create(
    model="${model}", messages=[{"role": "user", "content": "Hello"}]
)
print(reply.choices[0].message.content)`;
  return html`<section class="panel" aria-labelledby="snip-title"><h3 id="snip-title">Use this token</h3>
    <p class="hint">Set <code>RELAYGATE_KEY</code> to the key shown when the token was created (<code>sk-…</code>); the full key cannot be shown again.</p>
    <h4>curl</h4><pre id="snippet-curl">${curl}</pre><h4>OpenAI Python SDK</h4><pre id="snippet-python">${py}</pre></section>`;
}

export function TokenDetail({ id }) {
  const token = useLoad(() => get(`/api/token/${id}`), [id], { every: LIVE_MS });
  const t = token.data;
  const logs = useLoad(
    () => (t ? get(`/api/log/self${query({ token_name: t.name, type: 2, page_size: CHART_ROWS })}`) : Promise.resolve(null)),
    [t && t.name, t && t.used_quota],
  );
  if (!t) return html`<h2>Token</h2>${token.error ? html`<${Message} error=${token.error} />` : html`<p>Loading…</p>`}`;
  const rows = logs.data ? logs.data.items.filter((l) => l.token_id === t.id) : [];
  return html`<div class="page-head"><h2>Token “${t.name}”</h2>
      <div class="toolbar"><a class="button" href=${`#/tokens/${t.id}/edit`}>Edit</a><a class="button" href="#/tokens">All tokens</a></div></div>
    <${Message} error=${token.error} />
    <div class="cards" aria-live="polite">
      <div class="card"><div class="label">Status</div><div class="value"><${Status} s=${t.status} /></div></div>
      <div class="card"><div class="label">Used</div><div class="value" id="detail-used"><${Quota} q=${t.used_quota} /></div></div>
      <div class="card"><div class="label">Remaining</div><div class="value" id="detail-remain">${t.unlimited_quota ? "Unlimited" : html`<${Quota} q=${t.remain_quota} />`}</div></div>
      <div class="card"><div class="label">Expires</div><div>${fmtExpiry(t.expired_time)}</div></div>
    </div>
    <div class="panel"><dl class="facts" id="token-facts">
      <dt>Key</dt><dd class="mono">${t.key}</dd>
      <dt>Models</dt><dd>${t.model_limits_enabled && t.models.length ? t.models.join(", ") : "All models"}</dd>
      <dt>IP allowlist</dt><dd>${t.allow_ips ? t.allow_ips.split("\n").join(", ") : "Any IP"}</dd>
      <dt>Group</dt><dd>${t.group || "(your group)"}</dd>
      <dt>Daily / monthly limit</dt><dd>${t.daily_quota ? fmtCredits(t.daily_quota) : "none"} / ${t.monthly_quota ? fmtCredits(t.monthly_quota) : "none"}</dd>
      <dt>Created / last used</dt><dd>${fmtTime(t.created_time)} / ${fmtTime(t.accessed_time)}</dd>
    </dl></div>
    <section class="panel" aria-labelledby="recent-title"><h3 id="recent-title">Recent activity</h3>
      <${Activity} rows=${t.recent_activity || []} id="recent-activity" /></section>
    <${Chart} logs=${rows} />
    <${Snippets} t=${t} />`;
}
