// Sign in with username + password (New API's POST /api/user/login session), or with a user
// id + system access token (the seeds' management-API credentials); registration when enabled.
import { api, get, post, signIn, signOut } from "../api.js";
import { html, useState, Message } from "../ui.js";

async function confirmSelf(fallback, access) {
  signIn(fallback, access);
  try {
    const self = await get("/api/user/self");
    signIn(self, access);
    return self;
  } catch (err) {
    signOut();
    throw err;
  }
}

export function Login({ status, onSignedIn, notice }) {
  const passwordLogin = status.password_login_enabled !== false;
  const [mode, setMode] = useState(passwordLogin ? "password" : "access");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setBusy(true);
    setError(null);
    try {
      let user;
      if (mode === "password") {
        const data = await post("/api/user/login", { username: f.get("username"), password: f.get("password") });
        if (data && data.require_2fa) throw new Error("This account uses two-factor sign-in, which the console does not support yet.");
        user = await confirmSelf(data, null);
      } else {
        const id = Number(f.get("user_id"));
        if (!Number.isInteger(id) || id <= 0) throw new Error("User ID must be a positive whole number.");
        const access = String(f.get("access_token")).trim();
        if (!access) throw new Error("Enter your system access token.");
        user = await confirmSelf({ id, username: "", role: 1 }, access);
      }
      onSignedIn(user);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  const tab = (m, label) =>
    html`<button type="button" aria-pressed=${mode === m ? "true" : "false"} id=${`mode-${m}`} onClick=${() => { setMode(m); setError(null); }}>${label}</button>`;
  return html`<main class="login" id="main">
    <div class="panel">
      <h1>Sign in to relaygate</h1>
      ${notice && html`<${Message} error=${notice} />`}
      <div class="tabs" role="group" aria-label="Sign-in method">${passwordLogin && tab("password", "Password")}${tab("access", "Access token")}</div>
      <form class="stack" onSubmit=${submit} id="login-form">
        ${mode === "password"
          ? html`<label>Username<input name="username" id="username" autocomplete="username" required maxlength="20" /></label>
              <label>Password<input name="password" id="password" type="password" autocomplete="current-password" required /></label>`
          : html`<label>User ID<input name="user_id" id="user_id" inputmode="numeric" required /></label>
              <label>System access token<input name="access_token" id="access_token" type="password" autocomplete="off" required />
              <span class="hint">From Personal settings → Security settings → System access tokens.</span></label>`}
        <${Message} error=${error} />
        <div><button class="primary" type="submit" disabled=${busy} id="login-submit">Sign in</button></div>
      </form>
      ${status.register_enabled && html`<p>No account yet? <a href="#/register">Create one</a>.</p>`}
    </div>
  </main>`;
}

export function Register() {
  const [error, setError] = useState(null);
  const [done, setDone] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setError(null);
    if (f.get("password") !== f.get("password2")) return setError(new Error("The two passwords differ."));
    try {
      await api("POST", "/api/user/register", { username: f.get("username"), password: f.get("password"), password2: f.get("password2") });
      setDone(true);
    } catch (err) {
      setError(err);
    }
  };
  return html`<main class="login" id="main"><div class="panel">
    <h1>Create an account</h1>
    ${done
      ? html`<${Message} ok="Account created." /><p><a href="#/login">Sign in</a></p>`
      : html`<form class="stack" onSubmit=${submit} id="register-form">
          <label>Username<input name="username" id="reg-username" autocomplete="username" required maxlength="20" /></label>
          <label>Password<input name="password" id="reg-password" type="password" autocomplete="new-password" required minlength="8" maxlength="20" />
            <span class="hint">8–20 characters.</span></label>
          <label>Repeat password<input name="password2" id="reg-password2" type="password" autocomplete="new-password" required /></label>
          <${Message} error=${error} />
          <div class="toolbar"><button class="primary" type="submit" id="register-submit">Create account</button> <a href="#/login">Back to sign in</a></div>
        </form>`}
  </div></main>`;
}
