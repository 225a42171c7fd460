// OpenDelta module picker: the folded module tree, selection, search, live counts. No external resources.
"use strict";
(() => {
  const token = new URLSearchParams(location.search).get("token") || "";
  const $ = (id) => document.getElementById(id);
  const tree = $("tree");
  const sel = new Set();           // selected module paths
  const openState = new Map();     // row id -> expanded?
  const unfolded = new Set();      // ids of folded-group rows shown member by member
  let data = null, big = false, match = null, flat = [], focusId = null, seq = 0, timer = null, lastNames = [];
  const selectable = new Map();    // every module path the tree stands for -> can the delta modify it?

  const join = (p, n) => (p ? p + "." + n : n);
  const fmt = (n) => n.toLocaleString("en-US");
  const human = (n) => { for (const [u, s] of [["B", 1e9], ["M", 1e6], ["K", 1e3]]) if (n >= s) return (n / s).toFixed(1) + u; return String(n); };
  const share = (r) => (r ? (100 * r).toPrecision(3).replace(/\.?0+$/, "") + "%" : "0%");

  function compress(names) {  // ["0","1","2","5"] -> "0-2,5"
    if (names.length < 2 || !names.every((n) => /^\d+$/.test(n))) return names.join(",");
    const nums = names.map(Number).sort((a, b) => a - b), runs = [];
    let start = nums[0], prev = nums[0];
    for (const n of nums.slice(1).concat([null])) {
      if (n !== null && n === prev + 1) { prev = n; continue; }
      runs.push(prev !== start ? `${start}-${prev}` : String(start));
      if (n !== null) start = prev = n;
    }
    return runs.join(",");
  }

  async function api(path, body) {
    const init = { method: body === undefined ? "GET" : "POST", headers: { "X-Picker-Token": token } };
    if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const r = await fetch(path, init);
    const j = await r.json().catch(() => ({ error: r.statusText }));
    if (!r.ok) throw new Error(j.error || `${r.status} ${r.statusText}`);
    return j;
  }

  // ----- rows: a row stands for one or more concrete modules (a folded group, under folded parents) -----
  function makeRow(node, base, parentId, depth) {
    const paths = [];
    for (const p of base) for (const m of node.names) paths.push(join(p, m));
    return { id: parentId + "/" + node.i, node, label: compress(node.names), paths, base, depth, group: node.names.length > 1 };
  }
  function kidsOf(row) {
    if (row.group && unfolded.has(row.id))
      return row.node.names.map((m) => ({ id: row.id + "#" + m, node: row.node, label: m, member: true, depth: row.depth + 1,
        paths: row.base.map((p) => join(p, m)), base: null, group: false }));
    return row.node.children.map((c) => makeRow(c, row.paths, row.id, row.depth + 1));
  }
  const hasKids = (row) => row.node.children.length > 0 || (row.group && unfolded.has(row.id));
  const isOpen = (row) => (openState.has(row.id) ? openState.get(row.id) : !big || row.depth < 3);
  function visible(row) {  // under a search: the row or something below it matches
    if (!match) return true;
    return row.paths.some(match) || kidsOf(row).some(visible);
  }
  function state(row) {
    if (!row.node.ok) return "";
    let n = 0;
    for (const p of row.paths) if (sel.has(p)) n++;
    return n === 0 ? "" : n === row.paths.length ? "on" : "some";
  }

  function collect(node, base) {  // every concrete module, for search counts and "select matches"
    for (const p of base) for (const m of node.names) {
      const path = join(p, m);
      selectable.set(path, !!node.ok);
      for (const c of node.children) collect(c, [path]);
    }
  }

  // ----- rendering -----------------------------------------------------------------------------
  function render() {
    flat = [];
    const frag = document.createDocumentFragment();
    for (const c of data.root.children) addRow(frag, makeRow(c, [""], "", 1));
    tree.replaceChildren(frag);
    if (!flat.some((r) => r.id === focusId)) focusId = flat.length ? flat[0].id : null;
    for (const li of tree.querySelectorAll("li[role=treeitem]")) li.tabIndex = li.dataset.id === focusId ? 0 : -1;
  }

  function addRow(parent, row) {
    if (!visible(row)) return;
    flat.push(row);
    const n = row.node, li = document.createElement("li"), div = document.createElement("div");
    const st = state(row), kids = hasKids(row), open = kids && (match ? true : isOpen(row));
    li.setAttribute("role", "treeitem");
    li.setAttribute("aria-level", String(row.depth));
    li.setAttribute("aria-selected", st === "on" ? "true" : "false");
    if (kids) li.setAttribute("aria-expanded", String(open));
    li.dataset.selectable = String(!!n.ok);
    if (!n.ok) { li.className = "off"; li.title = n.why || "not selectable"; li.setAttribute("aria-description", "not selectable: " + li.title); }
    if (match && row.paths.some(match)) li.classList.add("hit");
    li.dataset.id = row.id;
    li.dataset.name = row.label;
    li.dataset.path = row.paths[0];
    li.dataset.modules = String(row.paths.length);
    div.className = "row";
    div.style.paddingLeft = `${(row.depth - 1) * 1.1 + 0.3}rem`;
    const twisty = span("twisty", kids ? (open ? "▾" : "▸") : "");
    const box = span("box " + st, "");
    box.setAttribute("aria-hidden", "true");
    div.append(twisty, box, span("name", row.label), span("cls", `(${n.cls})`));
    if (row.group) {
      const b = document.createElement("button");
      b.type = "button"; b.className = "unfold"; b.tabIndex = -1;
      b.textContent = unfolded.has(row.id) ? "fold" : `unfold ${n.names.length}`;
      b.title = "show the members of this folded group one by one (key U)";
      b.addEventListener("click", (e) => { e.stopPropagation(); unfold(row); });
      div.append(b);
    }
    const params = n.params.map((p) => (p[3] ? `${p[0]} → ${p[3]}` : `${p[0]}:[${p[1].join(", ")}]`));
    if (params.length) div.append(span("params", params.join(" ") + " " + n.params[0][2]));
    if (n.ok && n.delta) div.append(span("dcount", `+${human(n.delta)}${row.paths.length > 1 ? " each" : ""}`));
    twisty.addEventListener("click", (e) => { e.stopPropagation(); if (kids) { openState.set(row.id, !open); render(); focus(row.id); } });
    div.addEventListener("click", () => { focusId = row.id; toggle(row); });
    li.append(div);
    if (open) {
      const ul = document.createElement("ul");
      ul.setAttribute("role", "group");
      for (const k of kidsOf(row)) addRow(ul, k);
      li.append(ul);
    }
    parent.append(li);
  }

  function span(cls, text) { const s = document.createElement("span"); s.className = cls; s.textContent = text; return s; }

  function focus(id) {
    focusId = id;
    for (const li of tree.querySelectorAll("li[role=treeitem]")) {
      li.tabIndex = li.dataset.id === id ? 0 : -1;
      if (li.dataset.id === id) { li.focus({ preventScroll: true }); li.firstChild.scrollIntoView({ block: "nearest" }); }
    }
  }

  // ----- actions -----------------------------------------------------------------------------------
  function toggle(row) {
    if (!row.node.ok) { showError(`${row.label} (${row.node.cls}) cannot be modified: ${row.node.why}`); render(); focus(row.id); return; }
    const on = state(row) === "on";
    for (const p of row.paths) on ? sel.delete(p) : sel.add(p);
    changed(row.id);
  }
  function unfold(row) {
    if (!row.group) return;
    unfolded.has(row.id) ? unfolded.delete(row.id) : unfolded.add(row.id);
    openState.set(row.id, true);
    render(); focus(row.id);
  }
  function changed(id) { render(); if (id) focus(id); scheduleCount(); }
  function showError(text) { $("error").textContent = text || ""; }

  function scheduleCount() {
    const mine = ++seq;
    document.body.dataset.pending = "1";
    $("submit").disabled = true;
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        const r = await api("/api/count", { selected: [...sel] });
        if (mine !== seq) return;
        $("n-modules").textContent = fmt(r.modules);
        $("n-delta").textContent = fmt(r.delta_parameters);
        $("n-delta").dataset.value = String(r.delta_parameters);
        $("share").textContent = share(r.share);
        lastNames = r.modified_modules;
        $("names").textContent = JSON.stringify(lastNames);
        showError("");
        $("submit").disabled = sel.size === 0;
      } catch (e) {
        if (mine !== seq) return;
        $("n-delta").textContent = "–"; $("n-delta").dataset.value = ""; $("share").textContent = "–";
        $("n-modules").textContent = fmt(sel.size);
        showError(e.message);
      }
      if (mine === seq) document.body.dataset.pending = "0";
    }, 60);
  }

  function setSearch(text) {
    match = null;
    $("search").classList.remove("bad");
    if (text) {
      if (text.startsWith("[r]")) {
        try { const rx = new RegExp(text.slice(3)); match = (p) => rx.test(p); }
        catch (e) { $("search").classList.add("bad"); $("matches").textContent = "bad regex"; match = () => false; }
      } else { const t = text.toLowerCase(); match = (p) => p.toLowerCase().includes(t); }
    }
    let hits = 0, ok = 0;
    if (match) for (const [p, can] of selectable) if (match(p)) { hits++; if (can) ok++; }
    if (!match || !$("search").classList.contains("bad"))
      $("matches").textContent = match ? `${hits} module${hits === 1 ? "" : "s"} match${hits === 1 ? "es" : ""} (${ok} selectable)` : "";
    $("select-matches").disabled = !ok;
    render();
  }
  function selectMatches() {
    if (!match) return;
    for (const [p, can] of selectable) if (can && match(p)) sel.add(p);
    changed(null);  // the focus stays in the search box
  }

  async function finish(path, text) {
    try {
      const r = await api(path, { selected: [...sel] });
      document.body.classList.add("done");
      const banner = document.createElement("p");
      banner.id = "banner";
      banner.textContent = r.cancelled ? "Cancelled: nothing was attached. You can close this tab."
        : `Submitted ${fmt(r.modules)} module(s): modified_modules = ${JSON.stringify(r.modified_modules)}. You can close this tab.`;
      document.body.dataset.state = r.cancelled ? "cancelled" : "submitted";
      document.querySelector("header").after(banner);
    } catch (e) { showError(`${text} failed: ${e.message}`); }
  }

  // ----- keyboard ------------------------------------------------------------------------------------
  tree.addEventListener("keydown", (e) => {
    const i = flat.findIndex((r) => r.id === focusId);
    if (i < 0) return;
    const row = flat[i];
    const kids = hasKids(row), open = kids && (match ? true : isOpen(row));
    let handled = true;
    switch (e.key) {
      case "ArrowDown": if (i + 1 < flat.length) focus(flat[i + 1].id); break;
      case "ArrowUp": if (i > 0) focus(flat[i - 1].id); break;
      case "Home": focus(flat[0].id); break;
      case "End": focus(flat[flat.length - 1].id); break;
      case "ArrowRight":
        if (kids && !open) { openState.set(row.id, true); render(); focus(row.id); }
        else if (kids && i + 1 < flat.length) focus(flat[i + 1].id);
        break;
      case "ArrowLeft":
        if (kids && open && !match) { openState.set(row.id, false); render(); focus(row.id); }
        else { for (let j = i - 1; j >= 0; j--) if (flat[j].depth < row.depth) { focus(flat[j].id); break; } }
        break;
      case " ": case "Enter": if (!e.ctrlKey && !e.metaKey) toggle(row); else handled = false; break;
      case "u": case "U": unfold(row); break;
      default: handled = false;
    }
    if (handled) e.preventDefault();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("submit").disabled) { e.preventDefault(); $("submit").click(); }
    else if (e.key === "/" && document.activeElement !== $("search")) { e.preventDefault(); $("search").focus(); }
  });
  $("search").addEventListener("input", (e) => setSearch(e.target.value));
  $("search").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.ctrlKey && !e.metaKey) { e.preventDefault(); selectMatches(); }
    else if (e.key === "Escape") { e.target.value = ""; setSearch(""); if (focusId) focus(focusId); }
    else if (e.key === "ArrowDown" && flat.length) {  // into the tree: the first matching row (or the current one)
      e.preventDefault();
      const hit = match && flat.find((r) => r.paths.some(match));
      focus(hit ? hit.id : focusId || flat[0].id);
    }
  });
  tree.addEventListener("focusin", (e) => { const li = e.target.closest("li[role=treeitem]"); if (li) focusId = li.dataset.id; });
  $("select-matches").addEventListener("click", selectMatches);
  $("clear").addEventListener("click", () => { sel.clear(); changed(null); });
  $("submit").addEventListener("click", () => finish("/api/submit", "Submit"));
  $("cancel").addEventListener("click", () => finish("/api/cancel", "Cancel"));
  $("copy").addEventListener("click", async () => {
    const text = JSON.stringify(lastNames);
    try { await navigator.clipboard.writeText(text); }
    catch (e) { const r = document.createRange(); r.selectNodeContents($("names")); getSelection().removeAllRanges(); getSelection().addRange(r); document.execCommand("copy"); }
    $("copy").textContent = "Copied"; setTimeout(() => ($("copy").textContent = "Copy"), 1200);
  });

  // ----- start -------------------------------------------------------------------------------------
  api("/api/model").then((d) => {
    data = d;
    let count = 0;
    const walk = (n) => { count++; n.children.forEach(walk); };
    walk(d.root);
    big = count > 300;
    for (const c of d.root.children) collect(c, [""]);
    for (const p of d.initial) if (selectable.get(p)) sel.add(p);
    const settings = Object.entries(d.settings).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
    $("what").textContent = `${d.model_class} · ${human(d.total)} parameters · delta_type "${d.delta_type}"` + (settings ? ` (${settings})` : "");
    render();
    document.body.dataset.renderMs = performance.now().toFixed(1);
    document.body.dataset.ready = "1";
    scheduleCount();
  }).catch((e) => { $("what").textContent = ""; showError(`Cannot load the model: ${e.message}`); });
})();
