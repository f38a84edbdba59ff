// My tables: list mine and those shared with me, preview the first rows, download, upload, share, delete.
"use strict";

const PREVIEW_ROWS = 20;

document.addEventListener("DOMContentLoaded", () => {
  const { el, cell, button, send, enc } = Collab;
  let groups = [];  // my groups, for the share menus

  // How a table is named in SQL and the API: mine as mydb.NAME, one shared with me as OWNER.NAME.
  const ref = (t) => t.ref || (t.shared ? t.owner + "." + t.name : "mydb." + t.name);
  const tablePath = (t) => "/mydb/tables/" + enc(ref(t));

  async function download(t, format) {
    await Collab.guard(async () => {
      const response = await Lab.fetch(Lab.API + tablePath(t) + "?format=" + format);
      Lab.saveBlob(await response.blob(), Lab.filenameOf(response, t.name + "." + format));
    });
  }

  async function preview(t) {
    const answer = await Collab.guard(async () => {
      const [info, data] = await Promise.all([
        Lab.json(Lab.API + tablePath(t)),
        Lab.json(Lab.API + tablePath(t) + "?format=json&limit=" + PREVIEW_ROWS),
      ]);
      return { info, data };
    });
    if (!answer) return;
    const rows = Collab.rowsOf(answer.data).slice(0, PREVIEW_ROWS);
    const columns = Collab.columnsOf(answer.data, rows);
    Collab.fillTable(el("preview-table"), columns, rows);
    el("preview-name").textContent = ref(t);
    el("preview-summary").textContent = "The first " + rows.length + " of " + Number(answer.info.rows).toLocaleString() +
      " rows (" + Lab.formatBytes(answer.info.bytes) + "); columns: " + (answer.info.columns || []).map((c) =>
        typeof c === "string" ? c : c.name + " (" + c.type + ")").join(", ") + ".";
    el("preview").dataset.table = ref(t);
    el("preview").hidden = false;
  }

  async function share(t, group, on) {
    const done = await Collab.guard(() => send(on ? "PUT" : "DELETE", tablePath(t) + "/shares/" + enc(group)));
    if (done !== undefined) await load();
  }

  async function remove(t) {
    if (!window.confirm("Delete the table " + t.name + "? This cannot be undone.")) return;
    const done = await Collab.guard(() => send("DELETE", tablePath(t)));
    if (done === undefined) return;
    if (el("preview").dataset.table === ref(t)) el("preview").hidden = true;
    await load();
  }

  function shareCell(t) {
    const box = document.createElement("span");
    box.className = "shares";
    const shares = t.groups || [];
    for (const g of shares) {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.dataset.group = g;
      chip.append(document.createTextNode(g));
      if (!t.shared) {
        const x = button("×", "unshare", () => share(t, g, false));
        x.title = "Stop sharing with " + g;
        x.setAttribute("aria-label", "Stop sharing with " + g);
        chip.appendChild(x);
      }
      box.appendChild(chip);
    }
    if (!t.shared) {
      const candidates = groups.filter((g) => !shares.includes(g.name));
      if (candidates.length) {
        const select = document.createElement("select");
        select.className = "share-group";
        for (const g of candidates) {
          const o = document.createElement("option");
          o.value = o.textContent = g.name;
          select.appendChild(o);
        }
        box.append(select, button("Share", "secondary share", () => share(t, select.value, true)));
      } else if (!groups.length) {
        box.append(document.createTextNode(shares.length ? "" : "no group yet"));
      }
    }
    return box;
  }

  function row(t) {
    const tr = document.createElement("tr");
    tr.dataset.table = ref(t);
    tr.dataset.shared = t.shared ? "true" : "false";
    const name = Collab.span(document.createTextNode(ref(t)));
    if (t.shared) {
      const mark = document.createElement("span");
      mark.className = "badge";
      mark.textContent = "shared with me";
      name.append(" ", mark);
    }
    const downloads = Collab.span(button("CSV", "secondary download-csv", () => download(t, "csv")),
      button("Parquet", "secondary download-parquet", () => download(t, "parquet")));
    const actions = Collab.span(button("Preview", "preview", () => preview(t)));
    if (!t.shared) actions.appendChild(button("Delete", "danger delete", () => remove(t)));
    tr.append(cell(name), cell(t.shared ? t.owner : "me"), cell(t.rows == null ? "" : Number(t.rows).toLocaleString()),
      cell(t.bytes == null ? "" : Lab.formatBytes(t.bytes)), cell(shareCell(t)), cell(downloads), cell(actions));
    return tr;
  }

  async function load() {
    const body = el("tables-table").tBodies[0];
    if (!Collab.needToken()) { body.replaceChildren(); return; }
    const [answer, mine] = await Promise.all([
      Collab.guard(() => send("GET", "/mydb/tables")),
      Collab.guard(() => send("GET", "/groups")),
    ]);
    if (mine) groups = mine.groups || [];
    if (!answer) return;
    const tables = answer.tables || [];
    body.replaceChildren(...tables.map(row));
    el("tables-empty").hidden = tables.length > 0;
    const u = answer.usage;
    if (u) {
      el("mydb-usage").textContent = "You use " + Lab.formatBytes(u.used_bytes) + " of your " +
        Lab.formatBytes(u.quota_bytes) + " MyDB quota, in " + u.tables + " table" + (u.tables === 1 ? "" : "s") + ".";
    }
  }

  el("upload-file").addEventListener("change", () => {
    const file = el("upload-file").files[0];
    if (!file || el("upload-name").value) return;
    const stem = file.name.replace(/\.[^.]*$/, "").toLowerCase().replace(/[^a-z0-9_]/g, "_");
    el("upload-name").value = (/^[a-z]/.test(stem) ? stem : "t_" + stem).slice(0, 63);
  });
  el("upload-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = el("upload-file").files[0];
    const name = el("upload-name").value.trim();
    if (!file) { Lab.showError(new Error("choose a CSV or Parquet file to upload")); return; }
    const parquet = /\.(parquet|pq)$/i.test(file.name);
    const status = el("upload-status");
    status.textContent = "Uploading " + file.name + " (" + Lab.formatBytes(file.size) + ")…";
    status.hidden = false;
    el("upload-submit").disabled = true;
    const made = await Collab.guard(async () => {
      const response = await Lab.fetch(Lab.API + "/mydb/tables/" + enc(name), {
        method: "PUT",
        headers: { "Content-Type": parquet ? "application/vnd.apache.parquet" : "text/csv" },
        body: file,
      });
      const text = await response.text();
      return text ? JSON.parse(text) : {};
    });
    el("upload-submit").disabled = false;
    if (made === undefined) { status.hidden = true; return; }
    status.textContent = "Saved " + file.name + " as " + (made.ref || "mydb." + name) +
      (typeof made.rows === "number" ? " (" + made.rows.toLocaleString() + (made.rows === 1 ? " row)" : " rows)") : "") + ".";
    status.dataset.table = name;
    el("upload-form").reset();
    await load();
  });

  load();
});
