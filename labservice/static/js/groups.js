// Groups: create one, list mine with my role, open one to see members and roles, add, re-role, remove, leave.
"use strict";

const ROLES = ["member", "admin", "owner"];

document.addEventListener("DOMContentLoaded", () => {
  const { el, cell, button, send, enc } = Collab;
  let me = null;       // GET /me
  let open = null;     // the group shown in the detail panel: GET /groups/{name}
  const detailError = el("detail-error");

  function myName() { return me ? me.user : null; }
  function myRole(group) {
    if (!group) return null;
    if (group.role) return group.role;
    const mine = (group.members || []).find((m) => m.user === myName());
    return mine ? mine.role : null;
  }
  const manages = (role) => role === "owner" || role === "admin";

  async function loadGroups() {
    const body = el("groups-table").tBodies[0];
    if (!Collab.needToken()) { body.replaceChildren(); return; }
    const answer = await Collab.guard(() => send("GET", "/groups"));
    if (!answer) return;
    const groups = answer.groups || [];
    body.replaceChildren(...groups.map((g) => {
      const tr = document.createElement("tr");
      tr.dataset.group = g.name;
      tr.append(cell(g.name), cell(g.description || ""), cell(g.role || ""),
        cell(button("Members", "secondary open", () => openGroup(g.name))));
      return tr;
    }));
    el("groups-empty").hidden = groups.length > 0;
  }

  function memberRow(m, role) {
    const tr = document.createElement("tr");
    tr.dataset.user = m.user;
    let roleCell = m.role;
    // Owners and admins change others' roles (an admin not an owner's); one's own role stays as it is here.
    if (manages(role) && m.user !== myName() && !(m.role === "owner" && role !== "owner")) {
      const select = document.createElement("select");
      select.className = "role";
      for (const r of ROLES) {
        const o = document.createElement("option");
        o.textContent = r;
        o.selected = r === m.role;
        select.appendChild(o);
      }
      select.addEventListener("change", () => setMember(m.user, select.value));
      roleCell = select;
    }
    const actions = document.createElement("span");
    if (m.user !== myName() && manages(role)) {
      actions.appendChild(button("Remove", "secondary remove", () => removeMember(m.user)));
    }
    tr.append(cell(m.user + (m.user === myName() ? " (you)" : "")), cell(roleCell), cell(actions));
    return tr;
  }

  async function openGroup(name) {
    Lab.clearError(detailError);
    const group = await Collab.guard(() => send("GET", "/groups/" + enc(name)));
    if (!group) return;
    open = group;
    const role = myRole(group);
    el("detail-name").textContent = group.name;
    el("detail-description").textContent = (group.description ? group.description + " · " : "") +
      "your role: " + (role || "none");
    el("members-table").tBodies[0].replaceChildren(...(group.members || []).map((m) => memberRow(m, role)));
    el("member-form").hidden = !manages(role);
    el("group-delete").hidden = role !== "owner";
    el("group-detail").dataset.group = group.name;
    el("group-detail").hidden = false;
  }

  async function setMember(user, role) {
    if (!open) return;
    const done = await Collab.guard(() => send("PUT", "/groups/" + enc(open.name) + "/members/" + enc(user), { role }),
      detailError);
    if (done === undefined) { await refreshDetail(); return; }
    await openGroup(open.name);
    el("group-detail").dataset.changed = user; // tells a watcher (and the tests) the change is shown
    await loadGroups();
  }
  async function removeMember(user) {
    if (!open) return;
    const done = await Collab.guard(() => send("DELETE", "/groups/" + enc(open.name) + "/members/" + enc(user)),
      detailError);
    if (done !== undefined) { await openGroup(open.name); await loadGroups(); }
  }
  async function refreshDetail() {
    // After a refused change, show the roles as they are (the select may show the refused choice).
    const keep = detailError.textContent;
    if (open) await openGroup(open.name);
    if (keep) { detailError.textContent = keep; detailError.hidden = false; }
  }

  el("group-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = el("group-name").value.trim();
    const made = await Collab.guard(() => send("POST", "/groups",
      { name, description: el("group-description").value.trim() }));
    if (made === undefined) return;
    el("group-name").value = "";
    el("group-description").value = "";
    await loadGroups();
    await openGroup(name);
  });
  el("member-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = el("member-user").value.trim();
    await setMember(user, el("member-role").value);
    if (detailError.hidden) el("member-user").value = "";
  });
  el("group-leave").addEventListener("click", async () => {
    if (!open || !myName()) return;
    const done = await Collab.guard(() => send("DELETE", "/groups/" + enc(open.name) + "/members/" + enc(myName())),
      detailError);
    if (done === undefined) return;
    el("group-detail").hidden = true;
    open = null;
    await loadGroups();
  });
  el("group-delete").addEventListener("click", async () => {
    if (!open || !window.confirm("Delete the group " + open.name + "? Its shares end at once.")) return;
    const done = await Collab.guard(() => send("DELETE", "/groups/" + enc(open.name)), detailError);
    if (done === undefined) return;
    el("group-detail").hidden = true;
    open = null;
    await loadGroups();
  });

  (async () => {
    me = await Collab.me();
    if (me) {
      el("me-who").textContent = "You are " + me.user + (me.admin ? " (administrator)" : "") + ".";
    }
    await loadGroups();
  })();
});
