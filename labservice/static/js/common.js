// Shared by every portal page: the browser's token, API calls with the server's error message, downloads.
"use strict";

// The path prefix the portal is served under (`labservice serve --root-path`), from the page's <meta>.
const LAB_ROOT = (document.querySelector('meta[name="lab-root"]') || { content: "" }).content || "";

const Lab = {
  TOKEN_KEY: "labservice.token",
  ROOT: LAB_ROOT,
  API: LAB_ROOT + "/api/v1",

  token() {
    try { return localStorage.getItem(this.TOKEN_KEY) || ""; } catch (e) { return ""; }
  },
  setToken(value) {
    if (value) localStorage.setItem(this.TOKEN_KEY, value); else localStorage.removeItem(this.TOKEN_KEY);
    this.showTokenStatus();
  },
  headers(extra) {
    const h = Object.assign({}, extra || {});
    const t = this.token();
    if (t) h["Authorization"] = "Bearer " + t;
    return h;
  },

  // fetch() that throws an Error carrying the server's `detail` (never a stack trace) on a non-2xx answer.
  async fetch(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = this.headers(opts.headers);
    let response;
    try {
      response = await fetch(path, opts);
    } catch (e) {
      throw Object.assign(new Error("could not reach the server (" + e.message + ")"), { status: 0 });
    }
    if (!response.ok) {
      let detail = response.status + " " + response.statusText;
      try {
        const body = await response.json();
        if (body && body.detail) detail = String(body.detail);
      } catch (e) { /* not JSON: keep the status line */ }
      throw Object.assign(new Error(detail), { status: response.status, response: response });
    }
    return response;
  },
  async json(path, options) {
    return (await this.fetch(path, options)).json();
  },

  showError(err, where) {
    const box = where || document.getElementById("error");
    if (!box) return;
    box.textContent = err ? (err.message || String(err)) : "";
    box.hidden = !err;
  },
  clearError(where) { this.showError(null, where); },

  // Save a Blob under a file name (the download event of a normal link).
  saveBlob(blob, filename) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  },
  filenameOf(response, fallback) {
    const cd = response.headers.get("Content-Disposition") || "";
    const m = /filename="?([^";]+)"?/.exec(cd);
    return m ? m[1] : fallback;
  },

  formatBytes(n) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
  },
  formatTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  },

  // What this browser's caller may do on a dataset: {caller, limits} from the dataset metadata.
  async limits(datasetId) {
    const info = await this.json(this.API + "/datasets/" + encodeURIComponent(datasetId));
    return { caller: info.caller, limits: info.limits };
  },

  showTokenStatus() {
    const el = document.getElementById("token-status");
    if (el) el.textContent = this.token() ? "token set" : "public access";
  },
};

document.addEventListener("DOMContentLoaded", () => {
  Lab.showTokenStatus();
  for (const el of document.querySelectorAll(".bytes[data-bytes]")) {
    el.textContent = Lab.formatBytes(el.dataset.bytes);
  }
});
