// The slice viewer: selects and sliders build a slice.png URL; the image follows them.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const page = document.getElementById("page");
  const datasetId = page.dataset.dataset;
  const times = JSON.parse(document.getElementById("dataset-times").textContent);
  const el = (id) => document.getElementById(id);
  const variable = el("slice-variable"), component = el("slice-component"), axis = el("slice-axis");
  const time = el("slice-time"), index = el("slice-index"), cmap = el("slice-cmap"), img = el("slice-image");
  let timer = null;

  function fillComponents() {
    const comps = variable.selectedOptions[0].dataset.components.split(",");
    component.replaceChildren(...comps.map((c, i) => new Option(c, String(i))));
  }
  function fitPlaneSlider() {
    const size = Number(axis.selectedOptions[0].dataset.size);
    index.max = String(size - 1);
    if (Number(index.value) > size - 1) index.value = String(size - 1);
  }
  function url() {
    const q = new URLSearchParams({
      variable: variable.value, component: component.value, axis: axis.value, index: index.value,
      time: String(times[Number(time.value)]), cmap: cmap.value,
    });
    return Lab.API + "/datasets/" + encodeURIComponent(datasetId) + "/slice.png?" + q.toString();
  }
  function update() {
    el("slice-time-value").textContent = Number(times[Number(time.value)]).toPrecision(6).replace(/\.?0+$/, "");
    el("slice-index-value").textContent = index.value;
    clearTimeout(timer);
    // Wait for the slider to rest a moment, so dragging does not queue dozens of images.
    timer = setTimeout(() => {
      const u = url();
      img.dataset.loading = "true";
      img.src = u;
      el("slice-url").textContent = u;
    }, 120);
  }
  img.addEventListener("load", () => { img.dataset.loading = "false"; Lab.clearError(); });
  img.addEventListener("error", async () => {
    img.dataset.loading = "false";
    try { await Lab.fetch(img.src); } catch (e) { Lab.showError(e); }
  });
  variable.addEventListener("change", () => { fillComponents(); update(); });
  axis.addEventListener("change", () => { fitPlaneSlider(); update(); });
  for (const c of [component, time, index, cmap]) c.addEventListener("input", update);
  fillComponents();
  fitPlaneSlider();
  update();
});
