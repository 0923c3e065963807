// Personal settings: profile, password change, and the system access token (shown once).
import { get, put } from "../api.js";
import { html, useState, useLoad, Message, Quota, SecretDialog } from "../ui.js";

const ROLES = { 1: "User", 10: "Admin", 100: "Root" };

function Profile({ me, onSaved }) {
  const [state, setState] = useState({});
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    try {
      await put("/api/user/self", { display_name: String(f.get("display_name")).trim() });
      setState({ ok: "Profile saved." });
      onSaved();
    } catch (error) {
      setState({ error });
    }
  };
  return html`<form class="stack panel narrow" onSubmit=${submit} id="profile-form"><h3>Profile</h3>
    <p>Username <strong>${me.username}</strong> · role ${ROLES[me.role] || me.role} · group <strong>${me.group}</strong></p>
    <label>Display name<input name="display_name" id="profile-display-name" value=${me.display_name} maxlength="20" /></label>
    <p>Email <strong id="profile-email">${me.email || "none"}</strong> <span class="hint">(set by an administrator: relaygate sends no email, so it cannot verify a change made here)</span></p>
    <${Message} error=${state.error} ok=${state.ok} />
    <div><button type="submit" id="profile-save">Save profile</button></div></form>`;
}

function Password() {
  const [state, setState] = useState({});
  const submit = async (e) => {
    e.preventDefault();
    const form = e.target;
    const f = new FormData(form);
    if (f.get("password") !== f.get("password2")) return setState({ error: new Error("The new passwords differ.") });
    try {
      await put("/api/user/self", { original_password: f.get("original_password"), password: f.get("password") });
      form.reset();
      setState({ ok: "Password changed." });
    } catch (error) {
      setState({ error });
    }
  };
  return html`<form class="stack panel narrow" onSubmit=${submit} id="password-form"><h3>Change password</h3>
    <label>Current password<input name="original_password" id="pw-current" type="password" autocomplete="current-password" /></label>
    <label>New password<input name="password" id="pw-new" type="password" autocomplete="new-password" required minlength="8" maxlength="20" /><span class="hint">8–20 characters.</span></label>
    <label>Repeat new password<input name="password2" id="pw-repeat" type="password" autocomplete="new-password" required /></label>
    <${Message} error=${state.error} ok=${state.ok} />
    <div><button type="submit" id="pw-save">Change password</button></div></form>`;
}

function AccessToken({ me }) {
  const [secret, setSecret] = useState(null);
  const [error, setError] = useState(null);
  const make = async () => {
    setError(null);
    try {
      setSecret(await get("/api/user/token"));
    } catch (err) {
      setError(err);
    }
  };
  return html`<section class="panel narrow" aria-labelledby="sat-title"><h3 id="sat-title">Security settings · System access tokens</h3>
    <p>A system access token lets scripts call the management API as you: send it as <code>Authorization: Bearer …</code> with <code>New-Api-User: ${me.id}</code>.
      Generating a new one invalidates the previous one. For model calls (<code>/v1/…</code>) use an <code>sk-</code> token from Tokens instead.</p>
    <${Message} error=${error} />
    <button class="primary" id="generate-access-token" onClick=${make}>Generate access token</button>
    ${secret && html`<${SecretDialog} title="Your system access token" secret=${secret}
      warning="This access token is shown once. Copy it now — it cannot be shown again; generate a new one if it is lost."
      onClose=${() => setSecret(null)} />`}
  </section>`;
}

export function Settings() {
  const self = useLoad(() => get("/api/user/self"), []);
  const me = self.data;
  return html`<div class="page-head"><h2>Personal settings</h2></div>
    <${Message} error=${self.error} />
    ${me && html`<div class="cards">
        <div class="card"><div class="label">Balance</div><div class="value"><${Quota} q=${me.quota} /></div></div>
        <div class="card"><div class="label">Used</div><div class="value"><${Quota} q=${me.used_quota} /></div></div>
        <div class="card"><div class="label">Requests</div><div class="value">${me.request_count}</div></div>
      </div>
      <${Profile} me=${me} onSaved=${self.reload} /><${Password} /><${AccessToken} me=${me} />`}`;
}
