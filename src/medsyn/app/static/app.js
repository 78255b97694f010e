// The page: upload an image (button or drag and drop), show the prediction and its heat-map, and the model card.
"use strict";

const $ = (id) => document.getElementById(id);
const percent = (p) => (100 * p).toFixed(1) + "%";
const number = (x) => (typeof x === "number" ? x.toFixed(3) : String(x));

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function upload(file) {
  if (!file) return;
  setStatus("Analysing " + file.name + " ...", false);
  $("result").hidden = true;
  const body = new FormData();
  body.append("file", file);
  let reply, data;
  try {
    reply = await fetch("/api/predict", { method: "POST", body });
    data = await reply.json();
  } catch (err) {
    setStatus("The server did not answer: " + err, true);
    return;
  }
  if (!reply.ok) {
    setStatus("Cannot use " + file.name + ": " + (data.error || reply.statusText), true);
    return;
  }
  showResult(data);
  setStatus(file.name + " (" + data.image.type.toUpperCase() + ", " + data.image.width + "x" + data.image.height + ")", false);
}

function showResult(data) {
  $("label").textContent = data.label;
  $("probability").textContent = "(" + percent(data.probability) + ")";
  const rows = Object.entries(data.probabilities).map(([name, p]) => "<tr><td>" + escapeHtml(name) + "</td><td>" + percent(p) + "</td></tr>");
  $("probabilities").innerHTML = "<tr><th>class</th><th>probability</th></tr>" + rows.join("");
  $("preview").src = data.preview_png;
  // An ONNX model file is served without torch, so without Grad-CAM: the answer's note says so in its place.
  $("heatmap").hidden = !data.heatmap_png;
  if (data.heatmap_png) $("heatmap").src = data.heatmap_png;
  $("heatmap-caption").textContent = data.heatmap_png ? data.heatmap.method + ", for class " + data.heatmap.class
                                                      : data.heatmap.note;
  $("result").hidden = false;
}

function escapeHtml(text) {
  const div = document.createElement("div");
  div.textContent = String(text);
  return div.innerHTML;
}

function fact(name, value) {
  if (value === null || value === undefined || value === "") return "";
  return "<dt>" + escapeHtml(name) + "</dt><dd>" + escapeHtml(value) + "</dd>";
}

// The arm's metrics over seeds ({mean, ci_low, ci_high}) and this seed's point values, whatever is present.
function metricCell(value) {
  if (value && typeof value === "object") {
    const mean = value.mean ?? value.value ?? value.estimate;
    const ci = value.ci_low !== undefined ? " [" + number(value.ci_low) + ", " + number(value.ci_high) + "]" : "";
    return number(mean) + ci;
  }
  return number(value);
}

function showCard(card) {
  $("notice").textContent = card.notice;
  const trained = card.trained_on || {};
  const threshold = card.threshold && typeof card.threshold === "object" ? card.threshold.value : card.threshold;
  $("card-facts").innerHTML = [
    fact("Training data", trained.data_source),
    fact("Arm", trained.arm),
    fact("Seed", trained.seed),
    fact("Seed chosen by", card.selection && card.selection.rule),
    fact("Classes", (card.class_names || []).join(", ")),
    fact("Decision threshold", threshold === null || threshold === undefined ? "argmax" : number(threshold)),
    fact("Input", card.preprocessing.image_size + " x " + card.preprocessing.image_size + ", " +
         card.preprocessing.channels + " channel(s), " + card.preprocessing.aspect),
  ].join("");
  const seed = card.test_metrics || {};
  const arm = (card.arm_test_metrics && card.arm_test_metrics.metrics) || {};
  const notMetrics = new Set(["n", "seed", "threshold", "best_epoch"]);
  const names = [...new Set([...Object.keys(arm), ...Object.keys(seed)])]
    .filter((k) => !notMetrics.has(k) && (typeof seed[k] === "number" || (arm[k] && typeof arm[k] === "object")));
  if (!names.length) {
    $("test-note").textContent = "No test metrics in this model file.";
    return;
  }
  const armInfo = card.arm_test_metrics || {};
  const hasArm = Object.keys(arm).length > 0;
  $("test-note").textContent = "Measured on the held-out real test split" + (seed.n ? " (" + seed.n + " images)" : "") +
    (hasArm ? ". The arm column is the mean over seeds" + (armInfo.replicates ? " (" + armInfo.replicates.length + " replicates)" : "") +
      " with its " + (armInfo.ci_level ? Math.round(100 * armInfo.ci_level) + "% " : "") + "confidence interval" +
      (armInfo.ci_method ? " (" + armInfo.ci_method + ")." : ".")
      : ". This model file has no seed-aggregated results (no results.json in its run).");
  const rows = names.map((k) => "<tr><td>" + escapeHtml(k) + "</td><td>" + (k in seed ? metricCell(seed[k]) : "") +
    "</td>" + (hasArm ? "<td>" + (k in arm ? metricCell(arm[k]) : "") + "</td>" : "") + "</tr>");
  $("metrics").innerHTML = "<tr><th>metric</th><th>this model (seed " + escapeHtml(trained.seed) + ")</th>" +
    (hasArm ? "<th>arm " + escapeHtml(trained.arm) + ", all seeds</th>" : "") + "</tr>" + rows.join("");
}

$("file").addEventListener("change", (event) => upload(event.target.files[0]));
const zone = $("dropzone");
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  upload(event.dataTransfer.files[0]);
});
fetch("/api/model").then((r) => r.json()).then(showCard)
  .catch((err) => { $("test-note").textContent = "Cannot load the model card: " + err; });
