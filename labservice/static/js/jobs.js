// My jobs: the browser's token, a table of its jobs with live progress, cancel and download; share a job with
// a group or make a download link (the panel below the table); the jobs others shared with my groups.
"use strict";

const ACTIVE = new Set(["queued", "running"]);
const POLL_MS = 1000;

document.addEventListener("DOMContentLoaded", () => {
  const el = (id) => document.getElementById(id);
  const { cell, button, send } = Collab;
  const enc = encodeURIComponent;
  const panelError = el("panel-error");
  let timer = null;
  let groups = null;   // my groups, loaded when the panel first opens
  let panelJob = null; // the job the share/link panel is about

  async function download(job, file) {
    Lab.clearError();
    try {
      const response = await Lab.fetch(Lab.API + "/jobs/" + enc(job.id) + "/files/" +
        file.name.split("/").map(enc).join("/"));
      Lab.saveBlob(await response.blob(), file.name.split("/").pop());
    } catch (e) {
      Lab.showError(e);
    }
  }
  async function cancel(job) {
    Lab.clearError();
    try {
      await Lab.json(Lab.API + "/jobs/" + enc(job.id), { method: "DELETE" });
    } catch (e) {
      Lab.showError(e);
    }
    refresh();
  }

  function progressOf(job) {
    const fraction = job.progress ? job.progress.fraction : 0;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = fraction;
    const progress = document.createElement("span");
    progress.className = "progress";
    progress.append(bar, document.createTextNode(" " + Math.round(fraction * 100) + "%" +
      (job.progress && job.progress.total ? " (" + job.progress.done + "/" + job.progress.total + ")" : "")));
    return progress;
  }
  function statusOf(job) {
    const status = document.createElement("span");
    status.className = "status status-" + job.status;
    status.textContent = job.status;
    if (job.error) status.title = job.error;
    return status;
  }
  function filesOf(job) {
    const files = document.createElement("span");
    if (job.status === "done") {
      for (const f of job.files) {
        files.appendChild(button(f.name + " (" + Lab.formatBytes(f.size) + ")", "download", () => download(job, f)));
      }
    }
    return files;
  }
  const datasetOf = (job) => (job.params && (job.params.dataset || job.params.sim)) || "";
  // My job (GET /jobs/{id}): the groups I shared it with; someone else's: the groups it reaches me through.
  const sharesOf = (job) => job.shared_with || job.shared_through || [];
  const when = (t) => Lab.formatTime(typeof t === "number" ? new Date(t * 1000).toISOString() : t); // epoch s or ISO

  function row(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    tr.dataset.status = job.status;
    const actions = document.createElement("span");
    if (ACTIVE.has(job.status)) actions.appendChild(button("Cancel", "cancel secondary", () => cancel(job)));
    else if (job.status === "done") actions.appendChild(button("Delete files", "cancel secondary", () => cancel(job)));
    if (job.status !== "expired") actions.appendChild(button("Share", "share secondary", () => openPanel(job)));
    if (job.status === "done") actions.appendChild(button("Link", "link secondary", () => openPanel(job, true)));
    tr.append(cell(job.id.slice(0, 12)), cell(job.kind), cell(datasetOf(job)), cell(statusOf(job)), cell(progressOf(job)),
      cell(Lab.formatTime(job.created)), cell(Lab.formatTime(job.expires)), cell(filesOf(job)), cell(actions));
    if (job.error) {
      const err = document.createElement("tr");
      err.className = "job-error";
      const td = cell(job.error);
      td.colSpan = 9;
      err.appendChild(td);
      return [tr, err];
    }
    return [tr];
  }
  function sharedRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    tr.dataset.status = job.status;
    tr.append(cell(job.id.slice(0, 12)), cell(job.kind), cell(datasetOf(job)), cell(statusOf(job)),
      cell(job.owner || ""), cell(sharesOf(job).join(", ")), cell(Lab.formatTime(job.expires)), cell(filesOf(job)));
    return tr;
  }

  // -- the share and link panel ---------------------------------------------------------------------------
  function chip(group) {
    const c = document.createElement("span");
    c.className = "chip";
    c.dataset.group = group;
    const x = button("×", "unshare", () => setShare(group, false));
    x.title = "Stop sharing with " + group;
    x.setAttribute("aria-label", "Stop sharing with " + group);
    c.append(document.createTextNode(group), x);
    return c;
  }
  function showShares(job) {
    const shares = sharesOf(job);
    el("job-shares").replaceChildren(...(shares.length ? shares.map(chip) : [document.createTextNode("no group")]));
    const options = (groups || []).filter((g) => !shares.includes(g.name)).map((g) => {
      const o = document.createElement("option");
      o.value = o.textContent = g.name;
      return o;
    });
    el("share-group").replaceChildren(...options);
    const none = (groups || []).length === 0;
    el("share-choice").hidden = el("share-submit").hidden = options.length === 0;
    el("share-none").hidden = !none;
    el("share-all").hidden = none || options.length > 0;
  }
  async function loadLinks(job) {
    const answer = await Collab.guard(() => send("GET", "/links"), panelError);
    const links = answer ? answer.links.filter((l) => l.job_id === job.id && l.active) : [];
    el("links-table").tBodies[0].replaceChildren(...links.map((l) => {
      const tr = document.createElement("tr");
      tr.dataset.link = l.id;
      tr.append(cell(l.id), cell(when(l.created)), cell(when(l.expires)),
        cell(button("Revoke", "secondary revoke", () => revoke(l))));
      return tr;
    }));
    el("links-table").hidden = links.length === 0;
  }
  async function openPanel(job, focusLink) {
    Lab.clearError(panelError);
    if (groups === null) {
      const answer = await Collab.guard(() => send("GET", "/groups"), panelError);
      groups = answer ? answer.groups || [] : [];
    }
    if (!panelJob || panelJob.id !== job.id) el("link-result").hidden = true;
    panelJob = job;
    el("panel-job").textContent = job.id.slice(0, 12);
    el("job-panel").dataset.job = job.id;
    el("job-panel").hidden = false;
    await reloadPanelJob(); // the list leaves out whom a job is shared with; GET /jobs/{id} says
    await loadLinks(job);
    (focusLink ? el("link-hours") : el("share-group")).focus();
    el("job-panel").scrollIntoView({ block: "nearest" });
  }
  async function reloadPanelJob() {
    if (!panelJob) return;
    const job = await Collab.guard(() => send("GET", "/jobs/" + enc(panelJob.id)), panelError);
    if (job) { panelJob = job; showShares(job); }
  }
  async function setShare(group, on) {
    if (!panelJob || !group) return;
    const path = "/jobs/" + enc(panelJob.id) + "/shares/" + enc(group);
    const done = await Collab.guard(() => send(on ? "PUT" : "DELETE", path), panelError);
    if (done !== undefined) await reloadPanelJob();
  }
  async function revoke(link) {
    const done = await Collab.guard(() => send("DELETE", "/links/" + enc(link.id)), panelError);
    if (done === undefined) return;
    if (el("link-result").dataset.link === link.id) el("link-result").hidden = true;
    await loadLinks(panelJob);
  }

  el("share-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setShare(el("share-group").value, true);
  });
  el("link-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!panelJob) return;
    const hours = Number(el("link-hours").value);
    const made = await Collab.guard(() => send("POST", "/jobs/" + enc(panelJob.id) + "/links",
      { expires_in_hours: hours }), panelError);
    if (!made) return;
    el("link-url").value = made.url;
    el("link-expires").textContent = when(made.expires);
    el("link-result").dataset.link = made.id;
    el("link-result").hidden = false;
    el("link-url").select();
    await loadLinks(panelJob);
  });
  el("link-copy").addEventListener("click", async () => {
    el("link-url").select();
    try { await navigator.clipboard.writeText(el("link-url").value); } catch (e) { document.execCommand("copy"); }
  });

  // -- the lists ---------------------------------------------------------------------------------------------
  async function refresh() {
    clearTimeout(timer);
    const body = el("jobs-table").tBodies[0];
    if (!Lab.token()) {
      body.replaceChildren();
      el("jobs-empty").hidden = true;
      el("job-panel").hidden = true;
      el("shared-jobs").hidden = true;
      el("token-who").textContent = "No token set: public callers cannot run batch jobs.";
      return;
    }
    try {
      const all = (await Lab.json(Lab.API + "/jobs?shared=true")).jobs;
      const jobs = all.filter((j) => !j.shared);
      const shared = all.filter((j) => j.shared);
      body.replaceChildren(...jobs.flatMap(row));
      el("jobs-empty").hidden = jobs.length > 0;
      el("shared-table").tBodies[0].replaceChildren(...shared.map(sharedRow));
      el("shared-jobs").hidden = shared.length === 0;
      Lab.clearError();
      if (all.some((j) => ACTIVE.has(j.status))) timer = setTimeout(refresh, POLL_MS);
    } catch (e) {
      Lab.showError(e);
    }
  }
  async function who() {
    if (!Lab.token()) return;
    try {
      const health = await Lab.fetch(Lab.API + "/datasets");
      el("token-who").textContent = "Token accepted: you are " + (health.headers.get("X-Lab-Caller") || "known") +
        " (" + Number(health.headers.get("X-Lab-Points-Limit")).toLocaleString() + " points per request).";
    } catch (e) {
      el("token-who").textContent = "";
      Lab.showError(e);
    }
  }

  el("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    Lab.setToken(el("token-input").value.trim());
    el("token-input").value = "";
    groups = null;
    panelJob = null;
    el("job-panel").hidden = true;
    who();
    refresh();
  });
  el("token-forget").addEventListener("click", () => {
    Lab.setToken("");
    refresh();
  });
  who();
  refresh();
});
