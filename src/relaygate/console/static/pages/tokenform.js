// New Token / Edit Token: every field of seeds 001–004. Amounts are entered in credits
// (seed 004: 200 credits = $1 = 500000 quota) and sent as quota units, New API's fields.
import { get, post, put } from "../api.js";
import { html, useState, useEffect, useLoad, Message, SecretDialog, QUOTA_PER_CREDIT, credits, fmtInt, go } from "../ui.js";

const PRESETS = [
  ["never", "Never expires"],
  ["1h", "1 hour"],
  ["1d", "1 day"],
  ["7d", "7 days"],
  ["30d", "30 days"],
  ["custom", "Pick a date"],
];
const PRESET_SECONDS = { "1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}(\/([12]?\d|3[0-2]))?$/;
const IPV6 = /^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*(\/(12[0-8]|1[01]\d|[1-9]?\d))?$/;

/** The problems of an IP allowlist, one message per bad line (empty list: none). */
export function ipProblems(text) {
  const out = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/[\s,]/g, "");
    if (line && !IPV4.test(line) && !IPV6.test(line)) out.push(`Line ${i + 1}: “${raw.trim()}” is not an IP address or CIDR range.`);
  });
  return out;
}

function localInput(ts) {
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

const blank = {
  name: "", unlimited: false, credits: "", preset: "never", date: "", models: [], modelsText: "",
  ips: "", group: "", daily: "", monthly: "",
};

function fromToken(t) {
  return {
    name: t.name, unlimited: t.unlimited_quota, credits: String(credits(t.remain_quota)),
    preset: t.expired_time === -1 ? "never" : "custom", date: t.expired_time === -1 ? "" : localInput(t.expired_time),
    models: t.model_limits_enabled ? t.models : [], modelsText: t.model_limits_enabled ? t.models.join(", ") : "",
    ips: t.allow_ips || "", group: t.group || "", daily: t.daily_quota ? String(credits(t.daily_quota)) : "",
    monthly: t.monthly_quota ? String(credits(t.monthly_quota)) : "",
  };
}

function toQuota(text, label, problems) {
  if (String(text).trim() === "") return 0;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0) {
    problems[label] = "Enter a number of credits, 0 or more.";
    return 0;
  }
  return Math.round(n * QUOTA_PER_CREDIT);
}

export function TokenForm({ id }) {
  const editing = id !== undefined;
  const [f, setF] = useState(blank);
  const [problems, setProblems] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState(null);
  const token = useLoad(() => (editing ? get(`/api/token/${id}`) : Promise.resolve(null)), [id]);
  const models = useLoad(() => get("/api/user/models"), []);
  useEffect(() => {
    if (token.data) setF(fromToken(token.data));
  }, [token.data]);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.type === "checkbox" ? e.target.checked : e.target.value });
  const modelList = Array.isArray(models.data) ? models.data : null;
  const toggleModel = (m, on) => setF({ ...f, models: on ? [...f.models, m] : f.models.filter((x) => x !== m) });

  const submit = async (e) => {
    e.preventDefault();
    const bad = {};
    if (!f.name.trim()) bad.name = "A name is required.";
    else if (new TextEncoder().encode(f.name).length > 50) bad.name = "At most 50 bytes.";
    const remain = toQuota(f.credits, "credits", bad);
    const daily = toQuota(f.daily, "daily", bad);
    const monthly = toQuota(f.monthly, "monthly", bad);
    let expired = -1;
    if (f.preset in PRESET_SECONDS) expired = Math.floor(Date.now() / 1000) + PRESET_SECONDS[f.preset];
    else if (f.preset === "custom") {
      const ms = Date.parse(f.date);
      if (!f.date || Number.isNaN(ms)) bad.date = "Pick a date and time, or choose “Never expires”.";
      else if (ms <= Date.now()) bad.date = "The expiry must be in the future.";
      else expired = Math.floor(ms / 1000);
    }
    const ipBad = ipProblems(f.ips);
    if (ipBad.length) bad.ips = ipBad.join(" ");
    const picked = modelList ? f.models : f.modelsText.split(/[\s,]+/).filter(Boolean);
    setProblems(bad);
    if (Object.keys(bad).length) return;
    const body = {
      name: f.name.trim(), unlimited_quota: f.unlimited, remain_quota: f.unlimited ? 0 : remain,
      expired_time: expired, model_limits_enabled: picked.length > 0, models: picked,
      allow_ips: f.ips.split("\n").map((l) => l.replace(/[\s,]/g, "")).filter(Boolean).join("\n"),
      group: f.group.trim(), daily_quota: daily, monthly_quota: monthly,
      cross_group_retry: false, // relaygate has no auto group (see the disabled checkbox)
    };
    setBusy(true);
    setError(null);
    try {
      if (editing) {
        if (f.unlimited) delete body.remain_quota;
        if (token.data && f.preset === "custom" && token.data.expired_time === expired) delete body.expired_time;
        await put("/api/token/", { id, ...body });
        go(`#/tokens/${id}`);
      } else {
        setCreated(await post("/api/token/", body));
      }
    } catch (err) {
      setError(err);
    }
    setBusy(false);
  };
  const err = (k) => problems[k] && html`<span class="field-error" id=${`${k}-error`}>${problems[k]}</span>`;
  if (editing && token.error && !token.data) return html`<h2>Edit token</h2><${Message} error=${token.error} />`;
  return html`<div class="page-head"><h2>${editing ? `Edit token “${token.data ? token.data.name : ""}”` : "New token"}</h2></div>
    <form class="stack panel" onSubmit=${submit} id="token-form" novalidate>
      <label>Name<input id="tf-name" value=${f.name} onInput=${set("name")} aria-invalid=${!!problems.name} aria-describedby="name-error" />
        <span class="hint">Identifies what the token is for, e.g. my-app-production.</span>${err("name")}</label>
      <fieldset><legend>Quota</legend>
        <label class="check"><input type="checkbox" id="tf-unlimited" checked=${f.unlimited} onChange=${set("unlimited")} /> Unlimited (draws from your balance with no per-token cap)</label>
        ${!f.unlimited &&
        html`<label>Quota in credits<input id="tf-credits" inputmode="decimal" value=${f.credits} onInput=${set("credits")} aria-describedby="credits-hint credits-error" />
          <span class="hint" id="credits-hint">200 credits = $1 = 500,000 quota. ${f.credits && Number.isFinite(Number(f.credits)) ? `This is ${fmtInt(Math.round(Number(f.credits) * QUOTA_PER_CREDIT))} quota.` : ""}</span>${err("credits")}</label>`}
        <label>Daily limit in credits<input id="tf-daily" inputmode="decimal" value=${f.daily} onInput=${set("daily")} placeholder="No daily limit" />${err("daily")}</label>
        <label>Monthly limit in credits<input id="tf-monthly" inputmode="decimal" value=${f.monthly} onInput=${set("monthly")} placeholder="No monthly limit" />${err("monthly")}</label>
      </fieldset>
      <fieldset><legend>Expiry</legend>
        <label>Expires<select id="tf-expiry" value=${f.preset} onChange=${set("preset")}>${PRESETS.map(([v, l]) => html`<option value=${v}>${l}</option>`)}</select></label>
        ${f.preset === "custom" && html`<label>Expiry date and time<input id="tf-date" type="datetime-local" value=${f.date} onInput=${set("date")} />${err("date")}</label>`}
      </fieldset>
      <fieldset><legend>Allowed models</legend>
        <span class="hint">None selected: every model available to your account.</span>
        ${modelList
          ? html`<div class="models" id="tf-models">${modelList.map(
              (m) => html`<label class="check"><input type="checkbox" value=${m} checked=${f.models.includes(m)} onChange=${(e) => toggleModel(m, e.target.checked)} /> ${m}</label>`,
            )}${modelList.length === 0 && html`<span>No models are available to your group.</span>`}</div>`
          : html`<label>Model names, separated by commas<textarea id="tf-models-text" value=${f.modelsText} onInput=${set("modelsText")}></textarea>
              <span class="hint">The model list could not be loaded${models.error ? `: ${models.error.message}` : ""}.</span></label>`}
      </fieldset>
      <label>IP allowlist<textarea id="tf-ips" value=${f.ips} onInput=${set("ips")} aria-describedby="ips-hint ips-error" placeholder=${"203.0.113.7\n10.0.0.0/8"}></textarea>
        <span class="hint" id="ips-hint">One IP address or CIDR range per line; empty allows any IP.</span>${err("ips")}</label>
      <label>Group<input id="tf-group" value=${f.group} onInput=${set("group")} placeholder="Your account's group" />
        <span class="hint">Groups let your admin apply different pricing ratios; leave empty for your own group.</span></label>
      <label class="check"><input type="checkbox" id="tf-cross" checked=${false} disabled aria-describedby="cross-hint" /> Cross-group retry
        <span class="hint" id="cross-hint">Not available: New API offers it only for tokens in the <code>auto</code> group, and relaygate has no auto group (a token uses one group), so it is always off.</span></label>
      <${Message} error=${error} />
      <div class="toolbar"><button class="primary" type="submit" id="tf-save" disabled=${busy}>${editing ? "Save changes" : "Create token"}</button>
        <a class="button" href=${editing ? `#/tokens/${id}` : "#/tokens"}>Cancel</a></div>
    </form>
    ${created &&
    html`<${SecretDialog} title="Your new token" secret=${`sk-${created.key}`}
      warning="The dashboard displays the token value once. Copy it now — you cannot retrieve the full key again after closing the dialog."
      onClose=${() => go(`#/tokens/${created.id}`)} />`}`;
}
