// My jobs: the browser's token, a table of its jobs with live progress, cancel and download.
"use strict";

const ACTIVE = new Set(["queued", "running"]);
const POLL_MS = 1000;

document.addEventListener("DOMContentLoaded", () => {
  const el = (id) => document.getElementById(id);
  let timer = null;

  function cell(content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content); else td.textContent = content == null ? "" : String(content);
    return td;
  }
  function button(label, cls, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.className = cls;
    b.addEventListener("click", onClick);
    return b;
  }

  async function download(job, file) {
    Lab.clearError();
    try {
      const response = await Lab.fetch(Lab.API + "/jobs/" + encodeURIComponent(job.id) + "/files/" +
        file.name.split("/").map(encodeURIComponent).join("/"));
      Lab.saveBlob(await response.blob(), file.name.split("/").pop());
    } catch (e) {
      Lab.showError(e);
    }
  }
  async function cancel(job) {
    Lab.clearError();
    try {
      await Lab.json(Lab.API + "/jobs/" + encodeURIComponent(job.id), { method: "DELETE" });
    } catch (e) {
      Lab.showError(e);
    }
    refresh();
  }

  function row(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    tr.dataset.status = job.status;
    const fraction = job.progress ? job.progress.fraction : 0;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = fraction;
    const progress = document.createElement("span");
    progress.className = "progress";
    progress.append(bar, document.createTextNode(" " + Math.round(fraction * 100) + "%" +
      (job.progress && job.progress.total ? " (" + job.progress.done + "/" + job.progress.total + ")" : "")));
    const status = document.createElement("span");
    status.className = "status status-" + job.status;
    status.textContent = job.status;
    if (job.error) status.title = job.error;
    const files = document.createElement("span");
    if (job.status === "done") {
      for (const f of job.files) {
        files.appendChild(button(f.name + " (" + Lab.formatBytes(f.size) + ")", "download", () => download(job, f)));
      }
    }
    const actions = document.createElement("span");
    if (ACTIVE.has(job.status)) actions.appendChild(button("Cancel", "cancel secondary", () => cancel(job)));
    else if (job.status === "done") actions.appendChild(button("Delete files", "cancel secondary", () => cancel(job)));
    const dataset = job.params && job.params.dataset ? job.params.dataset : "";
    tr.append(cell(job.id.slice(0, 12)), cell(job.kind), cell(dataset), cell(status), cell(progress),
      cell(Lab.formatTime(job.created)), cell(Lab.formatTime(job.expires)), cell(files), cell(actions));
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

  async function refresh() {
    clearTimeout(timer);
    const body = el("jobs-table").tBodies[0];
    if (!Lab.token()) {
      body.replaceChildren();
      el("jobs-empty").hidden = true;
      el("token-who").textContent = "No token set: public callers cannot run batch jobs.";
      return;
    }
    try {
      const { jobs } = await Lab.json(Lab.API + "/jobs");
      body.replaceChildren(...jobs.flatMap(row));
      el("jobs-empty").hidden = jobs.length > 0;
      Lab.clearError();
      if (jobs.some((j) => ACTIVE.has(j.status))) timer = setTimeout(refresh, POLL_MS);
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
