// Shared by the collaboration pages (Groups, My tables, SQL, My jobs): DOM helpers, JSON calls, who am I.
"use strict";

const Collab = {
  el(id) { return document.getElementById(id); },

  // A <td> holding text or a node.
  cell(content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content); else td.textContent = content == null ? "" : String(content);
    return td;
  },
  button(label, cls, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    if (cls) b.className = cls;
    b.addEventListener("click", onClick);
    return b;
  },
  span(...children) {
    const s = document.createElement("span");
    s.append(...children);
    return s;
  },

  // A JSON request (body serialised when given); resolves to the parsed answer or null for an empty one.
  async send(method, path, body) {
    const options = { method };
    if (body !== undefined) {
      options.headers = { "Content-Type": "application/json" };
      options.body = JSON.stringify(body);
    }
    const response = await Lab.fetch(Lab.API + path, options);
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  },
  enc(part) { return encodeURIComponent(part); },

  // The signed-in user (GET /me), or null without a token; an API error goes to the page's error box.
  async me() {
    if (!Lab.token()) return null;
    try {
      return await Lab.json(Lab.API + "/me");
    } catch (e) {
      Lab.showError(e);
      return null;
    }
  },
  // Show the "paste a token" notice when there is none; true when a token is set.
  needToken() {
    const box = this.el("token-needed");
    const has = Boolean(Lab.token());
    if (box) box.hidden = has;
    return has;
  },
  // Run an action with the page's error box: clear it, await, show the server's detail on failure.
  async guard(action, where) {
    Lab.clearError(where);
    try {
      return await action();
    } catch (e) {
      Lab.showError(e, where);
      const box = where || document.getElementById("error");
      if (box && box.scrollIntoView) box.scrollIntoView({ block: "nearest" }); // seen where it was shown
      return undefined;
    }
  },

  // Fill a <table> with rows of objects: a header of the columns, cells formatted for reading.
  fillTable(table, columns, rows) {
    const head = document.createElement("tr");
    for (const c of columns) {
      const th = document.createElement("th");
      th.textContent = c;
      head.appendChild(th);
    }
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren(...rows.map((r) => {
      const tr = document.createElement("tr");
      for (const c of columns) tr.appendChild(this.cell(this.value(r[c])));
      return tr;
    }));
  },
  value(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") return String(Number(v.toPrecision(10))); // no float noise (0.30000000000000004)
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  },
  // Rows of a table answer in any of the shapes the API gives: {rows: [...]}, {data: [...]} or a list.
  rowsOf(answer) {
    if (Array.isArray(answer)) return answer;
    for (const key of ["rows", "data", "records"]) if (answer && Array.isArray(answer[key])) return answer[key];
    return [];
  },
  columnsOf(answer, rows) {
    if (answer && Array.isArray(answer.columns)) return answer.columns.map((c) => (typeof c === "string" ? c : c.name));
    return rows.length ? Object.keys(rows[0]) : [];
  },
};
