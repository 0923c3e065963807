// The console's shell: hash routes, the sign-in gate, the navigation, the theme switch.
import { render } from "./vendor/htm-preact-standalone.module.js";
import { get, who, signOut } from "./api.js";
import { html, useState, useEffect, Message, setQuotaPerUnit } from "./ui.js";
import { Login, Register } from "./pages/login.js";
import { Tokens } from "./pages/tokens.js";
import { TokenForm } from "./pages/tokenform.js";
import { TokenDetail } from "./pages/tokendetail.js";
import { Logs } from "./pages/logs.js";
import { Settings } from "./pages/settings.js";
import { Users, Channels, QuotaView } from "./pages/admin.js";

const ROLE_ADMIN = 10;

const ROUTES = [
  [/^\/tokens\/new$/, () => html`<${TokenForm} />`, "/tokens"],
  [/^\/tokens\/(\d+)\/edit$/, (m) => html`<${TokenForm} id=${Number(m[1])} />`, "/tokens"],
  [/^\/tokens\/(\d+)$/, (m) => html`<${TokenDetail} id=${Number(m[1])} />`, "/tokens"],
  [/^\/tokens$/, () => html`<${Tokens} />`, "/tokens"],
  [/^\/logs$/, () => html`<${Logs} />`, "/logs"],
  [/^\/settings$/, () => html`<${Settings} />`, "/settings"],
  [/^\/admin\/users$/, () => html`<${Users} />`, "/admin/users", true],
  [/^\/admin\/channels$/, () => html`<${Channels} />`, "/admin/channels", true],
  [/^\/admin\/quota$/, () => html`<${QuotaView} />`, "/admin/quota", true],
];

function currentPath() {
  return location.hash.replace(/^#/, "").split("?")[0] || "/tokens";
}

function applyTheme(theme) {
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}

function ThemeSwitch() {
  const [theme, setTheme] = useState(localStorage.getItem("relaygate.theme") || "system");
  const change = (e) => {
    const v = e.target.value;
    setTheme(v);
    localStorage.setItem("relaygate.theme", v);
    applyTheme(v);
  };
  return html`<label class="hint">Theme
    <select id="theme" value=${theme} onChange=${change}>
      <option value="system">System</option><option value="light">Light</option><option value="dark">Dark</option>
    </select></label>`;
}

function Nav({ path, me, onLogout }) {
  const link = (href, label) =>
    html`<li><a href=${`#${href}`} aria-current=${path === href ? "page" : undefined}>${label}</a></li>`;
  return html`<aside class="side">
    <h1>relaygate</h1>
    <nav aria-label="Main">
      <ul>${link("/tokens", "Tokens")}${link("/logs", "Logs")}${link("/settings", "Personal settings")}</ul>
      ${me.role >= ROLE_ADMIN &&
      html`<h2>Admin</h2><ul>${link("/admin/users", "Users")}${link("/admin/channels", "Channels")}${link("/admin/quota", "Quota view")}</ul>`}
    </nav>
    <div class="who">
      <div>Signed in as <strong id="who-name">${me.username || `user ${me.id}`}</strong></div>
      <${ThemeSwitch} />
      <div><button class="link" id="logout" onClick=${onLogout}>Sign out</button></div>
    </div>
  </aside>`;
}

function App() {
  const [path, setPath] = useState(currentPath());
  const [me, setMe] = useState(who());
  const [status, setStatus] = useState(null);
  const [notice, setNotice] = useState(null);
  useEffect(() => {
    const onHash = () => setPath(currentPath());
    const onUnauthorized = (e) => {
      signOut();
      setMe(null);
      setNotice(`Your session has ended: ${e.detail}`);
    };
    addEventListener("hashchange", onHash);
    addEventListener("relaygate:unauthorized", onUnauthorized);
    // Effects run after the first paint: a hash set between the first render and this line
    // fired its hashchange with no listener (seen as a page that never came, issue 13 item 1).
    onHash();
    get("/api/status").then(
      (s) => {
        setStatus(s);
        setQuotaPerUnit(s.quota_per_unit);
      },
      () => setStatus({}),
    );
    return () => {
      removeEventListener("hashchange", onHash);
      removeEventListener("relaygate:unauthorized", onUnauthorized);
    };
  }, []);
  useEffect(() => {
    const title = { "/login": "Sign in", "/register": "Create account" }[path];
    document.title = `${title || (ROUTES.find(([re]) => re.test(path))?.[2] || "").replace(/^\//, "").replace("/", " · ") || "console"} — relaygate`;
  }, [path]);
  if (status === null) return html`<p class="boot">Loading…</p>`;
  if (!me) {
    const onIn = (user) => {
      setMe(user);
      setNotice(null);
      location.hash = "#/tokens";
    };
    if (path === "/register" && status.register_enabled) return html`<${Register} />`;
    const closed = path === "/register" ? "This server does not allow self-registration: ask an administrator for an account." : null;
    return html`<${Login} status=${status} onSignedIn=${onIn} notice=${notice || closed} />`;
  }
  const logout = async () => {
    try {
      await get("/api/user/logout");
    } catch {
      /* signed in with an access token, or the session is already gone */
    }
    signOut();
    setMe(null);
    location.hash = "#/login";
  };
  const route = ROUTES.find(([re]) => re.test(path));
  let page;
  if (!route) page = html`<h2>Not found</h2><p>No page at <code>${path}</code>. <a href="#/tokens">Go to Tokens</a>.</p>`;
  else if (route[3] && me.role < ROLE_ADMIN) page = html`<${Message} error="This page is for administrators." />`;
  else page = route[1](path.match(route[0]));
  return html`<a class="skip" href="#main" onClick=${(e) => {
      e.preventDefault();
      document.getElementById("main").focus();
    }}>Skip to content</a>
    <div class="shell">
      <${Nav} path=${route ? route[2] : path} me=${me} onLogout=${logout} />
      <main id="main" tabindex="-1">${page}</main>
    </div>`;
}

applyTheme(localStorage.getItem("relaygate.theme"));
render(html`<${App} />`, document.getElementById("app"));
