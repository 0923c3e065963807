// Admin pages: Users (list, create, top-up, disable), Channels (list, create, test,
// enable/disable) and the operator quota view (tokens by spend rate, live, refreshing).
import { get, post, query } from "../api.js";
import { html, useState, useLoad, Message, Quota, Status, Pager, Dialog, SecretDialog, fmtInt, fmtTime, QUOTA_PER_CREDIT } from "../ui.js";

const PAGE_SIZE = 20;
const ROLES = { 1: "User", 10: "Admin", 100: "Root" };
const USER_STATUS = { 1: "Enabled", 2: "Disabled" };
const CHANNEL_STATUS = { 1: "Enabled", 2: "Disabled", 3: "Auto-disabled" };

function TopUp({ user, onClose, onDone }) {
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const n = Number(new FormData(e.target).get("credits"));
    if (!Number.isFinite(n) || n <= 0) return setError(new Error("Enter a positive number of credits."));
    try {
      await post("/api/user/manage", { id: user.id, action: "add_quota", mode: "add", value: Math.round(n * QUOTA_PER_CREDIT) });
      onDone(`Added ${n} credits to ${user.username}.`);
      onClose();
    } catch (err) {
      setError(err);
    }
  };
  return html`<${Dialog} title=${`Top up ${user.username}`} onClose=${onClose} id="topup">
    <form class="stack" onSubmit=${submit}><label>Credits to add<input name="credits" inputmode="decimal" required autofocus /><span class="hint">200 credits = $1.</span></label>
      <${Message} error=${error} />
      <div class="toolbar"><button class="primary" type="submit">Add</button><button type="button" onClick=${onClose}>Cancel</button></div></form>
  <//>`;
}

function CreateUser({ onClose, onDone }) {
  const [error, setError] = useState(null);
  const [access, setAccess] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    try {
      const made = await post("/api/user/", {
        username: String(f.get("username")).trim(), display_name: String(f.get("display_name")).trim(),
        password: f.get("password") || undefined, role: Number(f.get("role")),
        quota: Math.round(Number(f.get("credits") || 0) * QUOTA_PER_CREDIT),
      });
      onDone(`User ${made.username} created.`);
      if (made.access_token) setAccess(made.access_token);
      else onClose();
    } catch (err) {
      setError(err);
    }
  };
  if (access)
    return html`<${SecretDialog} title="The new user's access token" secret=${access} warning="Shown once: hand it to the user now." onClose=${onClose} />`;
  return html`<${Dialog} title="Create user" onClose=${onClose} id="create-user">
    <form class="stack" onSubmit=${submit}>
      <label>Username<input name="username" required maxlength="20" autofocus /></label>
      <label>Display name<input name="display_name" maxlength="20" /></label>
      <label>Password<input name="password" type="password" autocomplete="new-password" minlength="8" maxlength="20" /></label>
      <label>Role<select name="role"><option value="1">User</option><option value="10">Admin</option></select></label>
      <label>Starting balance in credits<input name="credits" inputmode="decimal" /></label>
      <${Message} error=${error} />
      <div class="toolbar"><button class="primary" type="submit">Create</button><button type="button" onClick=${onClose}>Cancel</button></div>
    </form><//>`;
}

export function Users() {
  const [page, setPage] = useState(1);
  const [dialog, setDialog] = useState(null);
  const [msg, setMsg] = useState({});
  const list = useLoad(() => get(`/api/user/${query({ p: page, page_size: PAGE_SIZE })}`), [page]);
  const done = (ok) => {
    setMsg({ ok });
    list.reload();
  };
  const manage = async (u, action) => {
    try {
      await post("/api/user/manage", { id: u.id, action });
      done(`User ${u.username} ${action}d.`);
    } catch (error) {
      setMsg({ error });
    }
  };
  return html`<div class="page-head"><h2>Users</h2><button class="primary" onClick=${() => setDialog({ kind: "create" })}>Create user</button></div>
    <${Message} error=${msg.error || list.error} ok=${msg.ok} />
    <div class="panel table-wrap" aria-busy=${list.loading ? "true" : "false"}><table id="users-table" class="rows"><caption class="visually-hidden">Users</caption>
      <thead><tr><th>ID</th><th>Username</th><th>Role</th><th>Status</th><th class="opt">Group</th><th class="num">Balance</th><th class="num opt">Used</th><th class="num opt">Requests</th><th>Actions</th></tr></thead>
      <tbody>${(list.data ? list.data.items : []).map((u) => html`<tr key=${u.id}>
        <td data-label="ID">${u.id}</td><td data-label="Username">${u.username}<span class="sub">${u.display_name}</span></td><td data-label="Role">${ROLES[u.role] || u.role}</td>
        <td data-label="Status"><${Status} s=${u.status} names=${USER_STATUS} /></td><td class="opt">${u.group}</td>
        <td class="num" data-label="Balance"><${Quota} q=${u.quota} /></td><td class="num opt"><${Quota} q=${u.used_quota} /></td><td class="num opt">${fmtInt(u.request_count)}</td>
        <td><div class="actions"><button onClick=${() => setDialog({ kind: "topup", user: u })} aria-label=${`Top up ${u.username}`}>Top up</button>
          ${u.status === 1
            ? html`<button class="danger" onClick=${() => manage(u, "disable")} aria-label=${`Disable ${u.username}`}>Disable</button>`
            : html`<button onClick=${() => manage(u, "enable")} aria-label=${`Enable ${u.username}`}>Enable</button>`}</div></td></tr>`)}
      </tbody></table>
      ${list.data && html`<${Pager} page=${page} size=${PAGE_SIZE} total=${list.data.total} onPage=${setPage} />`}</div>
    ${dialog && dialog.kind === "topup" && html`<${TopUp} user=${dialog.user} onClose=${() => setDialog(null)} onDone=${done} />`}
    ${dialog && dialog.kind === "create" && html`<${CreateUser} onClose=${() => setDialog(null)} onDone=${done} />`}`;
}

function CreateChannel({ onClose, onDone }) {
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    try {
      await post("/api/channel/", {
        mode: "single",
        channel: {
          name: String(f.get("name")).trim(), type: Number(f.get("type") || 1), base_url: String(f.get("base_url")).trim(),
          key: String(f.get("key")).trim(), models: String(f.get("models")).split(/[\s,]+/).filter(Boolean).join(","),
          group: String(f.get("group")).trim() || "default", priority: Number(f.get("priority") || 0), weight: Number(f.get("weight") || 0),
        },
      });
      onDone("Channel created.");
      onClose();
    } catch (err) {
      setError(err);
    }
  };
  return html`<${Dialog} title="Create channel" onClose=${onClose} id="create-channel">
    <form class="stack" onSubmit=${submit}>
      <label>Name<input name="name" required maxlength="100" autofocus /></label>
      <label>Type<select name="type"><option value="1">OpenAI-compatible</option><option value="14">Anthropic</option><option value="24">Gemini</option></select></label>
      <label>Base URL<input name="base_url" type="url" placeholder="https://api.openai.com" /></label>
      <label>Key<input name="key" type="password" autocomplete="off" required /><span class="hint">Write-only: never shown again.</span></label>
      <label>Models<input name="models" required placeholder="gpt-4o-mini, gpt-4o" /></label>
      <label>Group<input name="group" placeholder="default" /></label>
      <label>Priority<input name="priority" inputmode="numeric" /></label>
      <label>Weight<input name="weight" inputmode="numeric" /></label>
      <${Message} error=${error} />
      <div class="toolbar"><button class="primary" type="submit">Create</button><button type="button" onClick=${onClose}>Cancel</button></div>
    </form><//>`;
}

export function Channels() {
  const [page, setPage] = useState(1);
  const [creating, setCreating] = useState(false);
  const [msg, setMsg] = useState({});
  const list = useLoad(() => get(`/api/channel/${query({ p: page, page_size: PAGE_SIZE })}`), [page]);
  const run = async (fn, ok) => {
    setMsg({});
    try {
      const out = await fn();
      setMsg({ ok: typeof ok === "function" ? ok(out) : ok });
      list.reload();
    } catch (error) {
      setMsg({ error });
    }
  };
  const test = (c) => run(() => get(`/api/channel/test/${c.id}`), () => `Channel ${c.name} answered.`);
  const setStatus = (c, status) => run(() => post(`/api/channel/${c.id}/status`, { status }), `Channel ${c.name} ${status === 1 ? "enabled" : "disabled"}.`);
  return html`<div class="page-head"><h2>Channels</h2><button class="primary" onClick=${() => setCreating(true)}>Create channel</button></div>
    <${Message} error=${msg.error || list.error} ok=${msg.ok} />
    <div class="panel table-wrap" aria-busy=${list.loading ? "true" : "false"}><table id="channels-table" class="rows"><caption class="visually-hidden">Channels</caption>
      <thead><tr><th>ID</th><th>Name</th><th>Status</th><th class="opt">Models</th><th class="opt">Group</th><th class="opt">Priority / weight</th><th class="opt">Last test</th><th class="num opt">Used</th><th>Actions</th></tr></thead>
      <tbody>${(list.data ? list.data.items : []).map((c) => html`<tr key=${c.id}>
        <td data-label="ID">${c.id}</td><td data-label="Name">${c.name}<span class="sub">${c.base_url}</span></td><td data-label="Status"><${Status} s=${c.status} names=${CHANNEL_STATUS} /></td>
        <td class="opt">${c.models}</td><td class="opt">${c.group}</td><td class="opt">${c.priority} / ${c.weight}</td>
        <td class="opt">${c.test_time ? `${fmtTime(c.test_time)} (${c.response_time} ms)` : "never"}</td><td class="num opt"><${Quota} q=${c.used_quota} /></td>
        <td><div class="actions"><button onClick=${() => test(c)} aria-label=${`Test ${c.name}`}>Test</button>
          ${c.status === 1
            ? html`<button class="danger" onClick=${() => setStatus(c, 2)} aria-label=${`Disable ${c.name}`}>Disable</button>`
            : html`<button onClick=${() => setStatus(c, 1)} aria-label=${`Enable ${c.name}`}>Enable</button>`}</div></td></tr>`)}
      </tbody></table>
      ${list.data && html`<${Pager} page=${page} size=${PAGE_SIZE} total=${list.data.total} onPage=${setPage} />`}</div>
    ${creating && html`<${CreateChannel} onClose=${() => setCreating(false)} onDone=${(ok) => { setMsg({ ok }); list.reload(); }} />`}`;
}

const RATE_WINDOWS = { 300: "5 minutes", 3600: "1 hour", 86400: "24 hours" };

export function QuotaView() {
  const [window, setWindow] = useState("3600");
  const rates = useLoad(() => get(`/api/operator/tokens${query({ window })}`), [window], { every: 5000 });
  const items = rates.data ? rates.data.items : [];
  return html`<div class="page-head"><h2>Operator quota view</h2>
      <label class="hint">Spend over<select id="rate-window" value=${window} onChange=${(e) => setWindow(e.target.value)}>
        ${Object.entries(RATE_WINDOWS).map(([v, l]) => html`<option value=${v}>${l}</option>`)}</select></label></div>
    <p class="hint">Every user's tokens ordered by spend in the window; used and remaining are live from the quota ledger. Refreshes every 5 s.</p>
    <${Message} error=${rates.error} />
    <div class="panel table-wrap" aria-busy=${rates.loading ? "true" : "false"}><table id="quota-table" class="rows"><caption class="visually-hidden">Tokens by spend rate</caption>
      <thead><tr><th>Token</th><th>User</th><th>Status</th><th class="num">Spend / min</th><th class="num opt">Requests</th><th class="num">Used</th><th class="num">Remaining</th><th class="opt">Last used</th></tr></thead>
      <tbody>${items.map((t) => html`<tr key=${t.id}>
        <td data-label="Token">${t.name}<span class="sub">#${t.id}</span></td><td data-label="User">${t.username}</td><td data-label="Status"><${Status} s=${t.status} /></td>
        <td class="num" data-label="Spend / min"><${Quota} q=${Math.round(t.spend_per_minute * 100) / 100} /></td><td class="num opt">${fmtInt(t.requests)}</td>
        <td class="num" data-label="Used"><${Quota} q=${t.used_quota} /></td><td class="num" data-label="Remaining">${t.unlimited_quota ? "Unlimited" : html`<${Quota} q=${t.remain_quota} />`}</td>
        <td class="opt">${fmtTime(t.accessed_time)}</td></tr>`)}</tbody></table>
      ${!rates.loading && items.length === 0 && html`<p>No token spent anything in this window.</p>`}</div>`;
}
