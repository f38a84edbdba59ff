// The cutout form: show the size as ranges change; download small cutouts, submit big ones as jobs.
"use strict";

const BYTES_PER_VALUE = 4; // cutouts are float32

document.addEventListener("DOMContentLoaded", () => {
  const datasetId = document.getElementById("page").dataset.dataset;
  const el = (id) => document.getElementById(id);
  const rows = [...document.querySelectorAll("#cutout-ranges tbody tr")];
  let limits = null;

  // Points along one axis for start:stop:step (stop exclusive); an Error says what to change.
  function axisCount(row) {
    const name = row.dataset.axis, size = Number(row.dataset.size), periodic = row.dataset.periodic === "true";
    const start = Number(el("cutout-" + name + "-start").value);
    const stop = Number(el("cutout-" + name + "-stop").value);
    const step = Number(el("cutout-" + name + "-step").value);
    if (![start, stop, step].every(Number.isInteger)) throw new Error(name + ": start, stop and step must be whole numbers");
    if (step < 1) throw new Error(name + ": step must be at least 1; got " + step);
    if (stop <= start) throw new Error(name + ": stop (" + stop + ") must be greater than start (" + start + ")");
    if (!periodic && (start < 0 || stop > size)) {
      throw new Error(name + " is not periodic: indices must lie in 0.." + size + "; got " + start + ":" + stop);
    }
    return { spec: start + ":" + stop + ":" + step, count: Math.ceil((stop - start) / step) };
  }
  function plan() {
    const option = el("cutout-variable").selectedOptions[0];
    const ranges = {};
    let points = 1;
    for (const row of rows) {
      const a = axisCount(row);
      ranges[row.dataset.axis] = a.spec;
      el("cutout-" + row.dataset.axis + "-count").textContent = String(a.count);
      points *= a.count;
    }
    const ncomp = Number(option.dataset.ncomp);
    return { ranges, points, ncomp, bytes: points * ncomp * BYTES_PER_VALUE };
  }
  function syncLimit() {
    return limits ? Number(limits.limits.max_cutout_bytes) : Infinity;
  }
  function jobsAllowed() {
    return Boolean(limits && limits.limits.jobs_allowed);
  }
  function refresh() {
    let p;
    try {
      p = plan();
    } catch (e) {
      el("cutout-size").textContent = e.message;
      el("cutout-submit").disabled = true;
      el("cutout-job").disabled = true;
      return null;
    }
    const big = p.bytes > syncLimit();
    el("cutout-size").textContent = p.points.toLocaleString() + " points × " + p.ncomp + " component" +
      (p.ncomp === 1 ? "" : "s") + " = " + Lab.formatBytes(p.bytes) + " (float32, before compression)";
    el("cutout-plan").textContent = limits === null ? "" : big
      ? "Over your synchronous cutout limit of " + Lab.formatBytes(syncLimit()) + ": " +
        (jobsAllowed() ? "it runs as a batch job." : "a token that allows jobs is needed.")
      : "Within your synchronous cutout limit of " + Lab.formatBytes(syncLimit()) + ": it downloads at once.";
    el("cutout-submit").textContent = big ? "Submit as a job" : "Download";
    el("cutout-submit").disabled = big && !jobsAllowed();
    el("cutout-job").disabled = !jobsAllowed();
    el("cutout-job").hidden = big;
    el("limit-help").hidden = !(big && !jobsAllowed());
    return p;
  }

  async function download(p) {
    const q = new URLSearchParams({ variable: el("cutout-variable").value, time: el("cutout-time").value,
      format: el("cutout-format").value, ...p.ranges });
    status("Reading " + Lab.formatBytes(p.bytes) + "…");
    const response = await Lab.fetch(Lab.API + "/datasets/" + encodeURIComponent(datasetId) + "/cutout?" + q);
    const blob = await response.blob();
    Lab.saveBlob(blob, Lab.filenameOf(response, datasetId + ".cutout"));
    status("Downloaded " + Lab.formatBytes(blob.size) + ".");
  }
  async function submitJob(p) {
    const fmt = el("cutout-format").value;
    const body = { kind: "cutout", dataset: datasetId, variables: [el("cutout-variable").value],
      times: [Number(el("cutout-time").value)], ...p.ranges,
      formats: el("cutout-format").selectedOptions[0].dataset.job === "true" ? [fmt] : ["hdf5"] };
    const job = await Lab.json(Lab.API + "/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const box = el("cutout-status");
    box.replaceChildren(document.createTextNode("Job " + job.id + " is " + job.status + ". Follow it on "));
    const a = document.createElement("a");
    a.href = Lab.ROOT + "/jobs";
    a.id = "job-link";
    a.textContent = "My jobs";
    box.append(a, document.createTextNode("."));
    box.dataset.job = job.id;
    box.hidden = false;
  }
  function status(message) {
    const box = el("cutout-status");
    box.textContent = message;
    box.hidden = false;
  }

  async function run(asJob) {
    Lab.clearError();
    const p = refresh();
    if (!p) return;
    const buttons = [el("cutout-submit"), el("cutout-job")];
    buttons.forEach((b) => { b.disabled = true; });
    try {
      if (asJob || p.bytes > syncLimit()) await submitJob(p); else await download(p);
    } catch (e) {
      Lab.showError(e);
      el("cutout-status").hidden = true;
      if (e.status === 413) el("limit-help").hidden = false;
    } finally {
      refresh();
    }
  }

  el("cutout-form").addEventListener("submit", (event) => { event.preventDefault(); run(false); });
  el("cutout-job").addEventListener("click", () => run(true));
  el("cutout-form").addEventListener("input", refresh);
  el("cutout-form").addEventListener("change", refresh);
  refresh();
  Lab.limits(datasetId).then((info) => {
    limits = info;
    el("caller-limits").textContent = "You are " + (info.caller.name || "public") + ": cutouts up to " +
      Lab.formatBytes(info.limits.max_cutout_bytes) + " download at once; " +
      (info.limits.jobs_allowed ? "bigger ones run as batch jobs." : "batch jobs need a token.");
    refresh();
  }).catch((e) => Lab.showError(e));
});
