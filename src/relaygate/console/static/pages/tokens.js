// Token management: the list with search, pagination, toggle, edit, delete and batch delete.
import { get, put, del, post, query } from "../api.js";
import { html, useState, useLoad, Message, Quota, Status, Pager, Confirm, fmtExpiry, fmtTime } from "../ui.js";

const PAGE_SIZE = 10;

function Limits({ t }) {
  const models = t.model_limits_enabled && t.models.length ? t.models.join(", ") : "All models";
  const ips = t.allow_ips ? t.allow_ips.split("\n").filter(Boolean).join(", ") : "Any IP";
  return html`<span>${models}</span><span class="sub">${ips}</span>`;
}

export function Tokens() {
  const [page, setPage] = useState(1);
  const [keyword, setKeyword] = useState("");
  const [search, setSearch] = useState("");
  const [selected, setSelected] = useState(new Set());
  const [confirm, setConfirm] = useState(null);
  const [error, setError] = useState(null);
  const [ok, setOk] = useState(null);
  const list = useLoad(
    () =>
      search
        ? get(`/api/token/search${query({ keyword: search, p: page, page_size: PAGE_SIZE })}`)
        : get(`/api/token/${query({ p: page, page_size: PAGE_SIZE })}`),
    [page, search],
  );
  const items = list.data ? list.data.items : [];
  const act = async (fn, done) => {
    setError(null);
    setOk(null);
    try {
      await fn();
      if (done) setOk(done);
      list.reload();
    } catch (err) {
      setError(err);
    }
  };
  const toggle = (t) =>
    act(() => put("/api/token/?status_only=1", { id: t.id, status: t.status === 1 ? 2 : 1 }), `Token “${t.name}” ${t.status === 1 ? "disabled" : "enabled"}.`);
  const askDelete = (t) =>
    setConfirm({
      title: "Delete token?",
      text: `Delete “${t.name}”? Any application using it will immediately start receiving authentication errors. This cannot be undone.`,
      run: () => del(`/api/token/${t.id}`).then(() => { setOk(`Token “${t.name}” deleted.`); list.reload(); }),
    });
  const askBatch = () =>
    setConfirm({
      title: "Delete selected tokens?",
      text: `Delete ${selected.size} selected token(s)? Applications using them will stop working immediately.`,
      run: () =>
        post("/api/token/batch", { ids: [...selected] }).then((n) => {
          setSelected(new Set());
          setOk(`${n} token(s) deleted.`);
          list.reload();
        }),
    });
  const pick = (id, on) => {
    const next = new Set(selected);
    if (on) next.add(id);
    else next.delete(id);
    setSelected(next);
  };
  const allOn = items.length > 0 && items.every((t) => selected.has(t.id));
  return html`<div class="page-head"><h2>Tokens</h2><a class="button primary" href="#/tokens/new" id="new-token">New token</a></div>
    <form class="toolbar" role="search" onSubmit=${(e) => { e.preventDefault(); setPage(1); setSearch(keyword.trim()); }}>
      <label>Search by name<input type="search" id="token-search" value=${keyword} onInput=${(e) => setKeyword(e.target.value)} /></label>
      <button type="submit">Search</button>
      ${search && html`<button type="button" onClick=${() => { setKeyword(""); setSearch(""); setPage(1); }}>Clear</button>`}
      <button type="button" class="danger" id="batch-delete" disabled=${selected.size === 0} onClick=${askBatch}>Delete selected (${selected.size})</button>
    </form>
    <${Message} error=${error || list.error} ok=${ok} />
    <div class="panel table-wrap" aria-busy=${list.loading ? "true" : "false"}>
      <table id="tokens-table" class="rows">
        <caption class="visually-hidden">Your tokens</caption>
        <thead><tr>
          <th><input type="checkbox" aria-label="Select all tokens on this page" checked=${allOn} onChange=${(e) => { const next = new Set(selected); items.forEach((t) => (e.target.checked ? next.add(t.id) : next.delete(t.id))); setSelected(next); }} /></th>
          <th>Name</th><th>Status</th><th class="opt">Key</th><th class="num">Used</th><th class="num">Remaining</th>
          <th class="opt">Expires</th><th class="opt">Models / IPs</th><th class="opt">Group</th><th class="opt">Last used</th><th>Actions</th>
        </tr></thead>
        <tbody>
          ${items.map(
            (t) => html`<tr key=${t.id} data-token-id=${t.id}>
              <td><input type="checkbox" aria-label=${`Select ${t.name}`} checked=${selected.has(t.id)} onChange=${(e) => pick(t.id, e.target.checked)} /></td>
              <td data-label="Name"><a href=${`#/tokens/${t.id}`}>${t.name}</a></td>
              <td data-label="Status"><${Status} s=${t.status} /></td>
              <td class="opt mono">${t.key}</td>
              <td class="num" data-label="Used"><${Quota} q=${t.used_quota} /></td>
              <td class="num" data-label="Remaining">${t.unlimited_quota ? "Unlimited" : html`<${Quota} q=${t.remain_quota} />`}</td>
              <td class="opt">${fmtExpiry(t.expired_time)}</td>
              <td class="opt"><${Limits} t=${t} /></td>
              <td class="opt">${t.group || "(your group)"}</td>
              <td class="opt">${fmtTime(t.accessed_time)}</td>
              <td><div class="actions">
                <button class="toggle" aria-label=${`${t.status === 1 ? "Disable" : "Enable"} ${t.name}`} onClick=${() => toggle(t)}>${t.status === 1 ? "Disable" : "Enable"}</button>
                <a class="button" href=${`#/tokens/${t.id}/edit`} aria-label=${`Edit ${t.name}`}>Edit</a>
                <button class="danger" aria-label=${`Delete ${t.name}`} onClick=${() => askDelete(t)}>Delete</button>
              </div></td>
            </tr>`,
          )}
        </tbody>
      </table>
      ${!list.loading && items.length === 0 && html`<p>${search ? "No token matches this search." : html`No tokens yet. <a href="#/tokens/new">Create your first token</a>.`}</p>`}
      ${list.data && html`<${Pager} page=${page} size=${PAGE_SIZE} total=${list.data.total} onPage=${setPage} />`}
    </div>
    ${confirm && html`<${Confirm} title=${confirm.title} text=${confirm.text} onConfirm=${confirm.run} onClose=${() => setConfirm(null)} />`}`;
}
