// The page's only script: pick or drop an image → POST /classify and /attention?format=png at
// once → top-k bars, the heat-map, and the timings the service measured (X-*-Time-Ms headers).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "vit-service-api-key"; // sessionStorage: gone when the tab closes
const TOP_K = 5;
const TIMINGS = [
  ["X-Total-Time-Ms", "total (server)"],
  ["X-Queue-Time-Ms", "waiting for a batch"],
  ["X-Inference-Time-Ms", "ONNX Runtime"],
];
let heatmapUrl = null; // the blob: URL shown now, revoked when replaced

class ApiError extends Error {}

async function api(path, init = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new ApiError(key ? "the API key was refused" : "this service needs an API key");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(body?.error?.message ?? `the service answered ${response.status}`);
  }
  return response;
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function describeModel() {
  try {
    const m = await (await api("/model")).json();
    $("model").textContent =
      `${m.name} v${m.version} · ${m.labels.length} classes · ${m.image_size.join("×")} px · ` +
      `${m.providers[0].replace("ExecutionProvider", "")}`;
  } catch (error) {
    $("model").textContent = error.message;
  }
}

function upload(file) {
  const form = new FormData();
  form.append("file", file);
  return { method: "POST", body: form };
}

async function look(file) {
  say(`Looking at ${file.name}…`);
  const started = performance.now();
  const [classified, attention] = await Promise.allSettled([
    api(`/classify?top_k=${TOP_K}`, upload(file)),
    api("/attention?format=png", upload(file)),
  ]);
  if (classified.status === "rejected") {
    say(classified.reason.message, true);
    return;
  }
  const answer = await classified.value.json();
  showBars(answer.results[0].predictions);
  showTimings(classified.value.headers, performance.now() - started);
  await showHeatmap(attention, file);
  $("result").hidden = false;
  say("");
}

function showBars(predictions) {
  $("top-label").textContent = predictions[0].label;
  $("bars").replaceChildren(
    ...predictions.map((p) => {
      const row = document.createElement("li");
      const label = Object.assign(document.createElement("span"), { textContent: p.label });
      const bar = Object.assign(document.createElement("span"), { className: "bar" });
      bar.style.width = `${(p.score * 100).toFixed(1)}%`;
      const track = Object.assign(document.createElement("span"), { className: "track" });
      track.append(bar);
      const score = Object.assign(document.createElement("span"), {
        className: "score",
        textContent: `${(p.score * 100).toFixed(1)}%`,
      });
      row.append(label, track, score);
      return row;
    }),
  );
}

function showTimings(headers, roundTripMs) {
  const rows = TIMINGS.filter(([header]) => headers.has(header)).map(([header, name]) => [
    name,
    `${Number(headers.get(header)).toFixed(1)} ms`,
  ]);
  rows.push(["round trip (browser)", `${roundTripMs.toFixed(1)} ms`]);
  $("timings").replaceChildren(
    ...rows.flatMap(([name, value]) => [
      Object.assign(document.createElement("dt"), { textContent: name }),
      Object.assign(document.createElement("dd"), { textContent: value }),
    ]),
  );
}

async function showHeatmap(attention, file) {
  // Without a heat-map (e.g. a bundle with no explain graph: 501) the picture itself is shown.
  const ok = attention.status === "fulfilled";
  const blob = ok ? await attention.value.blob() : file;
  $("heatmap-caption").textContent = ok
    ? "attention rollout over the image"
    : `no heat-map: ${attention.reason.message}`;
  if (heatmapUrl) URL.revokeObjectURL(heatmapUrl);
  heatmapUrl = URL.createObjectURL(blob);
  $("heatmap").src = heatmapUrl;
}

$("file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) look(file);
  event.target.value = ""; // picking the same file again fires change again
});
for (const [type, over] of [["dragenter", true], ["dragleave", false], ["drop", false]]) {
  $("drop").addEventListener(type, () => $("drop").classList.toggle("over", over));
}
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key-form").hidden = true;
  say("");
  describeModel();
});

describeModel();
