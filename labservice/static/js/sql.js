// The query box: Quick (the synchronous SQL endpoint) or Submit (a `sql` batch job), optionally saved into MyDB.
"use strict";

const MAX_ROWS_SHOWN = 1000;

document.addEventListener("DOMContentLoaded", () => {
  const { el, send, enc } = Collab;

  function request() {
    const body = { sql: el("sql-text").value.trim() };
    const into = el("sql-into").value.trim();
    if (into) body.into = into;
    return { target: el("sql-target").value, body };
  }
  function status(...nodes) {
    el("sql-status").replaceChildren(...nodes);
    el("sql-status").hidden = nodes.length === 0;
  }
  function link(href, text, id) {
    const a = document.createElement("a");
    a.href = Lab.ROOT + href;
    a.textContent = text;
    if (id) a.id = id;
    return a;
  }
  const text = (s) => document.createTextNode(s);

  // With `into` the API answers with the saved table ({name, ref, rows, bytes, columns}), not the rows.
  function savedNote(into, saved) {
    const n = saved && saved.rows;
    const rows = typeof n === "number" ? " (" + n.toLocaleString() + (n === 1 ? " row)" : " rows)") : "";
    return [text("Saved as " + ((saved && saved.ref) || "mydb." + into) + rows + ". See "),
      link("/tables", "My tables", "sql-tables-link"), text(".")];
  }

  async function quick() {
    const { target, body } = request();
    const path = target === "mydb" ? "/mydb/sql" : "/datasets/" + enc(target) + "/sql";
    status(text("Running…"));
    el("sql-result").hidden = true;
    const answer = await Collab.guard(() => send("POST", path + "?format=json", body));
    if (answer === undefined) { status(); return; }
    const rows = Collab.rowsOf(answer);
    if (!body.into) {
      const columns = Collab.columnsOf(answer, rows);
      Collab.fillTable(el("sql-table"), columns, rows.slice(0, MAX_ROWS_SHOWN));
      el("sql-summary").textContent = rows.length.toLocaleString() + " row" + (rows.length === 1 ? "" : "s") +
        (answer.truncated ? " (truncated at " + answer.max_rows + ")" : "") +
        (rows.length > MAX_ROWS_SHOWN ? "; the first " + MAX_ROWS_SHOWN + " are shown" : "") + ".";
      el("sql-result").hidden = false;
    }
    if (body.into) status(...savedNote(body.into, answer)); else status();
  }

  async function submit() {
    const { target, body } = request();
    const job = { kind: "sql", ...body, format: el("sql-format").value };
    if (target !== "mydb") job.sim = target; // without a simulation the job's SQL is MyDB SQL
    status(text("Submitting…"));
    const made = await Collab.guard(() => send("POST", "/jobs", job));
    if (made === undefined) { status(); return; }
    status(text("Job " + made.id + " is " + made.status + ". Follow it on "), link("/jobs", "My jobs", "job-link"),
      text(body.into ? "; when it is done the result is also mydb." + body.into + "." : "."));
    el("sql-status").dataset.job = made.id;
  }

  async function run(action) {
    const buttons = [el("sql-quick"), el("sql-submit")];
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await action();
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }
  // A new target brings its own example, unless the query box holds the user's own text.
  let example = el("sql-target").selectedOptions[0].dataset.example;
  el("sql-target").addEventListener("change", () => {
    const next = el("sql-target").selectedOptions[0].dataset.example;
    if (el("sql-text").value.trim() === example.trim()) el("sql-text").value = next;
    example = next;
  });
  el("sql-form").addEventListener("submit", (event) => { event.preventDefault(); run(quick); });
  el("sql-submit").addEventListener("click", () => run(submit));
});
