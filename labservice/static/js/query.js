// The point-query form: parse CSV points, check the caller's limit, POST to the points API, show the table.
"use strict";

const MAX_ROWS_SHOWN = 1000;

// Parse "x,y,z" lines; skip blank lines, '#' comments and a non-numeric header. Throws with the line number.
function parsePoints(text) {
  const points = [];
  const lines = text.split(/\r?\n/);
  let first = true;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/#.*/, "").trim();
    if (!line) continue;
    const parts = line.split(/[\s,;]+/).filter((p) => p !== "");
    const nums = parts.map(Number);
    const header = first && parts.every((p) => !Number.isFinite(Number(p)));
    first = false;
    if (nums.some((v) => !Number.isFinite(v))) {
      if (header) continue; // only the first line may be a header such as "x,y,z"
      throw new Error("line " + (i + 1) + ": expected three numbers x, y, z; got '" + lines[i].trim() + "'");
    }
    if (nums.length !== 3) {
      throw new Error("line " + (i + 1) + ": expected three numbers x, y, z; got " + nums.length);
    }
    points.push(nums);
  }
  if (points.length === 0) throw new Error("no points: give one x, y, z per line");
  return points;
}

function flatRow(value) {
  return Array.isArray(value) ? value.flat(Infinity) : [value];
}

document.addEventListener("DOMContentLoaded", () => {
  const datasetId = document.getElementById("page").dataset.dataset;
  const el = (id) => document.getElementById(id);
  const form = el("query-form"), text = el("query-points");
  let limit = null;
  let last = null; // {request, response}

  async function loadLimits() {
    try {
      const { caller, limits } = await Lab.limits(datasetId);
      limit = limits.points_per_request;
      el("caller-limits").textContent = "You are " + (caller.name || "public") + ": up to " +
        limit.toLocaleString() + " points × times per request.";
    } catch (e) {
      Lab.showError(e);
    }
  }
  function countPoints() {
    try {
      const n = parsePoints(text.value).length;
      el("query-count").textContent = n.toLocaleString() + " point" + (n === 1 ? "" : "s");
    } catch (e) {
      el("query-count").textContent = e.message;
    }
  }
  function explainLimit(message) {
    el("limit-help-text").textContent = message;
    el("limit-help").hidden = false;
  }

  el("query-file").addEventListener("change", () => {
    const file = el("query-file").files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => { text.value = String(reader.result); countPoints(); };
    reader.onerror = () => Lab.showError(new Error("could not read " + file.name));
    reader.readAsText(file);
  });
  text.addEventListener("input", countPoints);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    Lab.clearError();
    el("limit-help").hidden = true;
    let points;
    try {
      points = parsePoints(text.value);
    } catch (e) {
      Lab.showError(e);
      return;
    }
    if (limit !== null && points.length > limit) {
      explainLimit("You sent " + points.length.toLocaleString() + " points; your limit is " +
        limit.toLocaleString() + " per request.");
      return;
    }
    const request = {
      variable: el("query-variable").value, points: points, time: Number(el("query-time").value),
      spatial: el("query-spatial").value, temporal: el("query-temporal").value, operator: el("query-operator").value,
    };
    el("query-submit").disabled = true;
    try {
      const response = await Lab.json(Lab.API + "/datasets/" + encodeURIComponent(datasetId) + "/points", {
        method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(request),
      });
      last = { request, response };
      showResult(request, response);
    } catch (e) {
      Lab.showError(e);
      if (e.status === 413) explainLimit(e.message);
    } finally {
      el("query-submit").disabled = false;
    }
  });

  function showResult(request, response) {
    const table = el("result-table");
    const comps = response.components;
    const anyClipped = response.clipped.some(Boolean);
    const head = document.createElement("tr");
    for (const name of ["#", "x", "y", "z", ...comps, ...(anyClipped ? ["one-sided"] : [])]) {
      const th = document.createElement("th");
      th.textContent = name;
      head.appendChild(th);
    }
    table.tHead.replaceChildren(head);
    const rows = [];
    const n = Math.min(request.points.length, MAX_ROWS_SHOWN);
    for (let i = 0; i < n; i++) {
      const tr = document.createElement("tr");
      const cells = [i, ...request.points[i], ...flatRow(response.values[i])];
      for (const v of cells) {
        const td = document.createElement("td");
        td.textContent = v === null ? "NaN" : String(v);
        tr.appendChild(td);
      }
      if (anyClipped) {
        const td = document.createElement("td");
        td.textContent = response.clipped[i] ? "yes" : "";
        tr.appendChild(td);
      }
      rows.push(tr);
    }
    table.tBodies[0].replaceChildren(...rows);
    el("query-summary").textContent = request.points.length.toLocaleString() + " points, " + request.variable +
      " " + request.operator + " at t = " + request.time + " (" + request.spatial + ", " + request.temporal + ")" +
      (request.points.length > n ? "; the table shows the first " + n + ", the downloads hold all" : "");
    el("query-result").hidden = false;
  }

  function tableRows() {
    return last.request.points.map((p, i) => [...p, ...flatRow(last.response.values[i])]);
  }
  el("download-csv").addEventListener("click", () => {
    if (!last) return;
    const lines = [["x", "y", "z", ...last.response.components].join(",")];
    for (const row of tableRows()) lines.push(row.map((v) => (v === null ? "NaN" : String(v))).join(","));
    Lab.saveBlob(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }),
      datasetId + "_" + last.request.variable + "_" + last.request.operator + ".csv");
  });
  el("download-hdf5").addEventListener("click", async () => {
    if (!last) return;
    Lab.clearError();
    const table = {
      dataset: datasetId, variable: last.request.variable, operator: last.request.operator,
      spatial: last.request.spatial, temporal: last.request.temporal, time: last.request.time,
      components: last.response.components, points: last.request.points,
      values: last.request.points.map((p, i) => flatRow(last.response.values[i])),
    };
    try {
      const response = await Lab.fetch(Lab.ROOT + "/export/points.h5", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(table),
      });
      Lab.saveBlob(await response.blob(), Lab.filenameOf(response, datasetId + ".h5"));
    } catch (e) {
      Lab.showError(e);
    }
  });

  countPoints();
  loadLimits();
});
