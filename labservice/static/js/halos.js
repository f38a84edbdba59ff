// The halo table of a simulation page: filters and column sorting through the halo search API.
"use strict";

const COLUMNS = ["id", "mass", "n_particles", "x", "y", "z", "r200c", "vmax", "vdisp"];

document.addEventListener("DOMContentLoaded", () => {
  const sim = document.getElementById("page").dataset.simulation;
  const el = (id) => document.getElementById(id);
  const table = el("halo-table");
  let order = "-mass";

  function format(column, value) {
    if (value === null || value === undefined) return "";
    if (column === "id" || column === "n_particles") return String(value);
    return Math.abs(value) >= 1e5 ? Number(value).toExponential(4) : Number(value).toPrecision(5);
  }
  function markSort() {
    for (const th of table.tHead.rows[0].cells) {
      const mark = th.querySelector(".sort-mark");
      const col = th.dataset.column;
      mark.textContent = order === col ? " ▲" : order === "-" + col ? " ▼" : "";
      th.setAttribute("aria-sort", order === col ? "ascending" : order === "-" + col ? "descending" : "none");
    }
  }

  async function search() {
    Lab.clearError();
    const q = new URLSearchParams({ order_by: order, limit: el("halo-limit").value, fields: COLUMNS.join(","),
      format: "json" });
    const filters = [["mass__gt", el("halo-mass-min").value], ["mass__lt", el("halo-mass-max").value],
      ["n_particles__ge", el("halo-npart-min").value]];
    for (const [key, value] of filters) if (value.trim() !== "") q.set(key, value.trim());
    const url = Lab.API + "/datasets/" + encodeURIComponent(sim) + "/snapshots/" + el("halo-snap").value +
      "/halos?" + q;
    try {
      const page = await Lab.json(url);
      const rows = page.rows.map((r) => {
        const tr = document.createElement("tr");
        tr.dataset.halo = String(r.id);
        for (const c of COLUMNS) {
          const td = document.createElement("td");
          if (c === "id") {
            const a = document.createElement("a");
            a.href = Lab.ROOT + "/datasets/" + encodeURIComponent(sim) + "/halos/" + r.id;
            a.textContent = String(r.id);
            td.appendChild(a);
          } else {
            td.textContent = format(c, r[c]);
          }
          tr.appendChild(td);
        }
        return tr;
      });
      table.tBodies[0].replaceChildren(...rows);
      el("halo-count").textContent = "Showing " + page.rows.length + " of " + page.total + " matching halos.";
    } catch (e) {
      table.tBodies[0].replaceChildren();
      el("halo-count").textContent = "";
      Lab.showError(e);
    }
    markSort();
  }

  for (const th of table.tHead.rows[0].cells) {
    const sortBy = () => {
      const col = th.dataset.column;
      order = order === "-" + col ? col : "-" + col; // first click: descending, then toggle
      search();
    };
    th.addEventListener("click", sortBy);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") sortBy(); });
  }
  el("halo-filters").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  el("halo-snap").addEventListener("change", search);
  search();
});
