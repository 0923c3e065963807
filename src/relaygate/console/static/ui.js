// Shared pieces: formatting, messages, dialogs, pager, the data-loading hook.
import { html, useState, useEffect, useRef, useCallback } from "./vendor/htm-preact-standalone.module.js";

export { html, useState, useEffect, useRef, useCallback };

// Seed 004: 200 credits = $1 = 500000 quota units.
export const QUOTA_PER_CREDIT = 2500;
let quotaPerUnit = 500000;
export function setQuotaPerUnit(n) {
  if (Number.isFinite(n) && n > 0) quotaPerUnit = n;
}
export const credits = (q) => q / QUOTA_PER_CREDIT;
export const fmtInt = (n) => Number(n).toLocaleString("en-US");
// Small amounts keep enough digits not to read as zero (6 quota = 0.0024 credits).
const digits = (v) => (Math.abs(v) >= 1 || v === 0 ? 2 : 6);
export function fmtCredits(q) {
  const c = credits(q);
  return `${c.toLocaleString("en-US", { maximumFractionDigits: digits(c) })} credits`;
}
export function fmtUsd(q) {
  const d = q / quotaPerUnit;
  // Below the last digit shown, a non-zero amount would read as $0.00.
  if (d > 0 && d < 0.000001) return "< $0.000001";
  return `$${d.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits(d) })}`;
}
/** A quota figure as the seeds speak of it: units, with credits and dollars underneath. */
export function Quota({ q }) {
  return html`<span class="mono">${fmtInt(q)}</span><span class="sub">${fmtCredits(q)} · ${fmtUsd(q)}</span>`;
}
export function fmtTime(ts) {
  if (!ts || ts <= 0) return "—";
  return new Date(ts * 1000).toLocaleString();
}
export function fmtExpiry(ts) {
  return ts === -1 ? "Never" : fmtTime(ts);
}
export const STATUS = { 1: "Enabled", 2: "Disabled", 3: "Expired", 4: "Exhausted" };
export function Status({ s, names = STATUS }) {
  return html`<span class=${`badge s${s}`}>${names[s] || `Status ${s}`}</span>`;
}

export function Message({ error, ok }) {
  if (error) return html`<div class="msg error" role="alert">${String(error.message || error)}</div>`;
  if (ok) return html`<div class="msg ok" role="status">${ok}</div>`;
  return null;
}

/**
 * Load `fn()` on mount and whenever `deps` change; `reload()` again on demand; with `every`,
 * refresh on a timer. A timed refresh is skipped while a load is in flight: otherwise a load
 * slower than `every` (a loaded machine) is discarded by the next tick, again and again, and
 * the page never gets its data.
 */
export function useLoad(fn, deps, { every = 0 } = {}) {
  const [state, setState] = useState({ loading: true, data: null, error: null });
  const [tick, setTick] = useState(0);
  const busy = useRef(false);
  useEffect(() => {
    let live = true;
    busy.current = true;
    fn().then(
      (data) => {
        if (!live) return;
        busy.current = false;
        setState({ loading: false, data, error: null });
      },
      (error) => {
        if (!live) return;
        busy.current = false;
        setState((s) => ({ loading: false, data: s.data, error }));
      },
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  useEffect(() => {
    if (!every) return undefined;
    const id = setInterval(() => {
      if (!busy.current) setTick((t) => t + 1);
    }, every);
    return () => clearInterval(id);
  }, [every]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

/** A modal <dialog>: Escape and the close button both close it; focus goes inside. */
export function Dialog({ title, onClose, children, id }) {
  const ref = useRef(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    const onCancel = (e) => {
      e.preventDefault();
      onClose();
    };
    d.addEventListener("cancel", onCancel);
    return () => d.removeEventListener("cancel", onCancel);
  }, []);
  return html`<dialog ref=${ref} aria-labelledby=${`${id}-title`} id=${id}>
    <h2 id=${`${id}-title`}>${title}</h2>
    ${children}
  </dialog>`;
}

export function Confirm({ title, text, confirmLabel = "Delete", onConfirm, onClose }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const go = async () => {
    setBusy(true);
    try {
      await onConfirm();
      onClose();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`<${Dialog} title=${title} onClose=${onClose} id="confirm">
    <p>${text}</p>
    <${Message} error=${error} />
    <div class="toolbar">
      <button class="danger" id="confirm-yes" disabled=${busy} onClick=${go}>${confirmLabel}</button>
      <button onClick=${onClose} autofocus>Cancel</button>
    </div>
  <//>`;
}

/** A secret shown once (token key, system access token), with a copy button. */
export function SecretDialog({ title, secret, warning, onClose }) {
  const [copied, setCopied] = useState("");
  const out = useRef(null);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret);
      setCopied("Copied to the clipboard.");
    } catch {
      const range = document.createRange();
      range.selectNodeContents(out.current);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      setCopied("Selected: press Ctrl+C (⌘C) to copy.");
    }
  };
  return html`<${Dialog} title=${title} onClose=${onClose} id="secret">
    <p class="warn">${warning}</p>
    <div class="keybox">
      <output ref=${out} class="mono" id="secret-value" aria-label="Secret value">${secret}</output>
      <button class="primary" onClick=${copy} id="secret-copy">Copy</button>
    </div>
    <p role="status" class="hint">${copied}</p>
    <div class="toolbar"><button onClick=${onClose} id="secret-close">I have copied it, close</button></div>
  <//>`;
}

export function Pager({ page, size, total, onPage }) {
  const pages = Math.max(1, Math.ceil(total / size));
  return html`<nav class="pager" aria-label="Pagination">
    <button onClick=${() => onPage(page - 1)} disabled=${page <= 1}><span aria-hidden="true">‹ </span>Previous page</button>
    <span>Page ${page} of ${pages} · ${fmtInt(total)} total</span>
    <button onClick=${() => onPage(page + 1)} disabled=${page >= pages}>Next page<span aria-hidden="true"> ›</span></button>
  </nav>`;
}

export function go(hash) {
  location.hash = hash;
}
