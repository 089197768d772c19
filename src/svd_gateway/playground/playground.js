// The playground: builds its controls from GET /v1/parameters and drives the predictions API (create, poll,
// cancel). Everything the server says is shown with textContent, never parsed as HTML.
"use strict";

const POLL_MS = 300;
const FORGE_SLUG = "stabilityai-stable-video-diffusion";
const $ = (id) => document.getElementById(id);
const state = { parameters: [], videoFormats: {}, lastInput: {}, imageDataUri: null, imageRead: null, prediction: null, polling: null, lastSeed: null,
                snippet: "curl" };

// --- small helpers -------------------------------------------------------------------------------------

function headers(json) {
  const token = $("token").value.trim();
  return { ...(token ? { Authorization: "Bearer " + token } : {}), ...(json ? { "Content-Type": "application/json" } : {}) };
}

// JSON whose integers beyond 2^53 (seeds) are BigInts, written as their exact digits: a Number would be
// rounded, and the API's integer fields refuse a string. `indent` as JSON.stringify's.
function toJson(value, indent) {
  const mark = "\u0001bigint:";
  return JSON.stringify(value, (_, item) => typeof item === "bigint" ? mark + item : item, indent)
    .replace(/"\\u0001bigint:(-?\d+)"/g, "$1");
}

async function api(method, path, body) {
  const reply = await fetch(path, { method, headers: headers(body !== undefined),
                                    body: body === undefined ? undefined : toJson(body) });
  let data = null;
  try { data = await reply.json(); } catch (_) { /* not JSON: reported by status below */ }
  if (!reply.ok) {
    const error = (data && data.error) || {};
    throw Object.assign(new Error(error.message || (data && data.detail) || `HTTP ${reply.status}`),
                        { status: reply.status, field: error.field || null });
  }
  return data;
}

function clearErrors() {
  for (const slot of document.querySelectorAll(".error")) slot.textContent = "";
  for (const control of document.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
}

// The control a server field names: "input.width", "width", or a model error's "WIDTH: ..." prefix.
function controlFor(field) {
  if (!field) return null;
  const name = field.replace(/^input\./, "").toLowerCase();
  const aliases = { input_image: "image", image: "image", prompt: "prompt", authorization: "token" };
  const id = aliases[name] || (state.parameters.some((p) => p.name === name) ? "param-" + name : null);
  return id ? $(id) : null;
}

function showError(message, field, status) {
  if (status === 401) {
    $("token-error").textContent = "The gateway refused the token (" + message + "). Enter the token the gateway " +
      "was started with.";
    $("token").setAttribute("aria-invalid", "true");
    return;
  }
  const control = controlFor(field);
  const slot = control ? $(control.id + "-error") : null;
  if (slot) {
    slot.textContent = message;
    control.setAttribute("aria-invalid", "true");
  } else {
    $("form-error").textContent = message;
  }
}

// --- controls from the server's contract -------------------------------------------------------------

function describe(p) {
  if (p.choices.length) return "One of " + p.choices.join(", ") + ".";
  if (p.low === null && p.high === null) return "";
  const range = (p.low === null ? "…" : p.low) + "–" + (p.high === null ? "…" : p.high);
  return (p.kind === "int" ? "An integer " : "A number ") + range +
    (p.multiple_of > 1 ? ", a multiple of " + p.multiple_of : "") + ".";
}

function buildControl(p) {
  const field = document.createElement("div");
  field.className = "field";
  const id = "param-" + p.name;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = p.name;
  let control;
  if (p.choices.length) {
    control = document.createElement("select");
    const fallback = new Option(p.default === null ? "server default" : `default (${p.default})`, "");
    control.add(fallback);
    for (const choice of p.choices) control.add(new Option(choice, choice));
  } else {
    control = document.createElement("input");
    if (p.name === "seed") {  // beyond 2^53: kept as text so no digit is lost
      control.type = "text";
      control.inputMode = "numeric";
    } else {
      control.type = "number";
      if (p.low !== null) control.min = p.low;
      if (p.high !== null) control.max = p.high;
      control.step = p.kind === "int" ? (p.multiple_of || 1) : "any";
    }
    control.placeholder = p.default === null ? (p.name === "seed" ? "random" : "server default") : "default " + p.default;
  }
  control.id = id;
  control.dataset.param = p.name;
  control.setAttribute("aria-describedby", `${id}-help ${id}-error`);
  const help = document.createElement("p");
  help.className = "help";
  help.id = id + "-help";
  help.textContent = [p.help, describe(p)].filter(Boolean).join(" ");
  const error = document.createElement("p");
  error.className = "error";
  error.id = id + "-error";
  error.setAttribute("role", "alert");
  field.append(label);
  if (p.name === "seed") {
    const row = document.createElement("div");
    row.className = "seed-row";
    const random = button("Random", () => { control.value = ""; }, "Clear the seed: the server picks a random one");
    const reuse = button("Reuse", () => { if (state.lastSeed) control.value = state.lastSeed; }, "Use the last video's seed");
    reuse.id = "reuse-seed";
    row.append(control, random, reuse);
    field.append(row);
  } else {
    field.append(control);
  }
  field.append(help, error);
  control.addEventListener("change", renderSnippet);
  return field;
}

function button(text, onClick, title) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.title = title;
  element.addEventListener("click", onClick);
  return element;
}

async function loadParameters() {
  const box = $("parameters");
  try {
    const data = await api("GET", "/v1/parameters");
    state.parameters = data.parameters;
    state.videoFormats = data.video_formats;
    for (const p of state.parameters) box.append(buildControl(p));
    $("parameters-status").textContent = "Empty fields take the default. " +
      (data.deployment ? "Defaults and limits are this deployment's." : "The model is not reachable: its own defaults apply.");
  } catch (error) {
    $("parameters-status").textContent = "Could not load the parameters: " + error.message;
  }
  renderSnippet();
}

// The request's input: only the fields that were filled in (the server's defaults apply to the rest).
function collectInput() {
  const input = {};
  for (const p of state.parameters) {
    const raw = $("param-" + p.name).value.trim();
    if (raw === "") continue;
    const number = Number(raw);
    input[p.name] = p.kind === "str" || !Number.isFinite(number) ? raw
      : p.kind === "int" && /^-?\d+$/.test(raw) && !Number.isSafeInteger(number) ? BigInt(raw)  // exact, not rounded
      : !Number.isSafeInteger(Math.trunc(number)) ? raw : number;
  }
  const prompt = $("prompt").value.trim();
  if (prompt) input.prompt = prompt;
  return input;
}

// --- image --------------------------------------------------------------------------------------------

function useImage(file) {
  if (!file) return;
  $("image-error").textContent = "";
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  const reader = new FileReader();
  state.imageRead = new Promise((resolve) => {  // Generate waits for it
    reader.onload = () => { state.imageDataUri = reader.result; resolve(); };
    reader.onerror = () => { $("image-error").textContent = "Could not read the file."; resolve(); };
  });
  reader.readAsDataURL(file);
}

function setUpDropZone() {
  const zone = $("drop-zone");
  $("image").addEventListener("change", (event) => useImage(event.target.files[0]));
  $("use-sample").addEventListener("click", async () => {
    try {
      const reply = await fetch("/playground/sample.png");
      useImage(new File([await reply.blob()], "sample.png", { type: "image/png" }));
    } catch (error) {
      $("image-error").textContent = "Could not load the sample image: " + error.message;
    }
  });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    useImage(event.dataTransfer.files[0]);
  });
}

// --- a job: submit, poll, cancel ----------------------------------------------------------------------

const PROGRESS_LINE = /(\d+)%\|[^|]*\| (\d+)\/(\d+) (\w+) \[([\d.]+)s\]/;

// Progress lines (tqdm's shape) → [{percent, step, total, phase, elapsed}], and the seed line if present.
function parseLogs(logs) {
  const lines = [];
  let seed = null;
  for (const line of (logs || "").split("\n")) {
    const match = PROGRESS_LINE.exec(line);
    if (match) lines.push({ percent: +match[1], step: +match[2], total: +match[3], phase: match[4], elapsed: +match[5] });
    const seedMatch = /^Using seed: (\d+)/.exec(line);
    if (seedMatch) seed = seedMatch[1];
  }
  return { lines, seed };
}

function showProgress(prediction) {
  const { lines } = parseLogs(prediction.logs);
  const last = lines[lines.length - 1];
  const bar = $("progress");
  if (!last) {
    bar.value = 0;
    $("progress-text").textContent = prediction.status === "starting" ? "Queued…" : "Starting…";
    return;
  }
  bar.value = last.percent;
  let text = `${last.phase} · step ${last.step}/${last.total} · ${last.elapsed.toFixed(1)} s`;
  const denoising = lines.filter((l) => l.phase === "denoising");
  if (last.phase === "denoising" && last.step > 0 && last.step < last.total) {
    const started = denoising[0].elapsed;
    const perStep = (last.elapsed - started) / Math.max(last.step - denoising[0].step, 1);
    if (perStep > 0) text += ` · about ${Math.ceil(perStep * (last.total - last.step))} s of denoising left`;
  }
  $("progress-text").textContent = text;
}

function phaseTimings(prediction) {
  const { lines } = parseLogs(prediction.logs);
  const starts = [];
  for (const line of lines) if (!starts.length || starts[starts.length - 1].phase !== line.phase) starts.push(line);
  const end = (prediction.metrics && prediction.metrics.predict_time) || (lines.length ? lines[lines.length - 1].elapsed : 0);
  return starts.map((s, i) => [s.phase, ((i + 1 < starts.length ? starts[i + 1].elapsed : end) - s.elapsed)]);
}

async function generate() {
  clearErrors();
  const input = collectInput();
  await state.imageRead;
  if (state.imageDataUri) input.image = state.imageDataUri;
  $("result").hidden = true;
  $("video").hidden = true;
  $("animation").hidden = true;
  $("progress-block").hidden = false;
  $("progress").value = 0;
  $("progress-text").textContent = "Submitting…";
  $("generate").disabled = true;
  state.lastInput = input;
  try {
    const prediction = await api("POST", "/v1/predictions", { input });
    remember(prediction);
    state.prediction = prediction;
    $("cancel").disabled = false;
    poll();
  } catch (error) {
    $("progress-block").hidden = true;
    $("generate").disabled = false;
    showError(error.message, error.field, error.status);
  }
}

async function poll() {
  const current = state.prediction;
  let prediction;
  try {
    prediction = await api("GET", "/v1/predictions/" + encodeURIComponent(current.id));
  } catch (error) {
    showError(error.message, error.field, error.status);
    finish();
    return;
  }
  if (state.prediction === null || state.prediction.id !== prediction.id) return;
  state.prediction = prediction;
  remember(prediction);
  showProgress(prediction);
  if (["succeeded", "failed", "canceled"].includes(prediction.status)) {
    finish();
    show(prediction);
  } else {
    state.polling = setTimeout(poll, POLL_MS);
  }
}

function finish() {
  clearTimeout(state.polling);
  $("generate").disabled = false;
  $("cancel").disabled = true;
  loadRuntime();
}

async function cancel() {
  const current = state.prediction;
  if (!current) return;
  $("cancel").disabled = true;
  try {
    const prediction = await api("POST", "/v1/predictions/" + encodeURIComponent(current.id) + "/cancel");
    $("progress-text").textContent = "Cancelling… (" + prediction.status + ")";
  } catch (error) {
    showError(error.message, error.field, error.status);
  }
}

function show(prediction) {
  if (prediction.status === "canceled") {
    $("progress-text").textContent = "Canceled.";
    return;
  }
  if (prediction.status === "failed") {
    const error = prediction.error || "the job failed";
    const field = /^([A-Z][A-Z_]*): /.exec(error);
    $("progress-text").textContent = "Failed.";
    showError(error, field ? field[1] : null);
    return;
  }
  $("progress").value = 100;
  $("progress-text").textContent = "Done.";
  const { seed } = parseLogs(prediction.logs);
  state.lastSeed = seed;
  $("seed-used").textContent = seed || "unknown";
  const url = new URL(prediction.output, location.href);
  const video = $("video");
  if (/\.(mp4|webm)$/.test(url.pathname)) {
    video.src = url.pathname;
    video.hidden = false;
  } else if (/\.(gif|webp)$/.test(url.pathname)) {
    $("animation").src = url.pathname;
    $("animation").hidden = false;
  }
  const download = $("download");
  download.href = url.pathname;
  download.textContent = "Download " + url.pathname.split(".").pop().toUpperCase();
  renderFormats(url.pathname.split(".").pop());
  const rows = $("timings").tBodies[0];
  rows.replaceChildren();
  for (const [phase, seconds] of phaseTimings(prediction)) {
    const row = rows.insertRow();
    row.insertCell().textContent = phase;
    row.insertCell().textContent = seconds.toFixed(2);
  }
  $("result").hidden = false;
}

// Download buttons for the other formats: the same input and seed again, in that format.
function renderFormats(extension) {
  const box = $("formats");
  box.replaceChildren(box.firstElementChild);
  const formats = (state.parameters.find((p) => p.name === "video_format") || { choices: [] }).choices;
  for (const format of formats) {
    if (state.videoFormats[format] && state.videoFormats[format].extension === "." + extension) continue;
    box.append(button(format, () => downloadAs(format), `Generate the same video as ${format} and download it`));
  }
}

async function downloadAs(format) {
  $("formats-error").textContent = "";
  const input = { ...state.lastInput, seed: state.lastSeed === null ? null : BigInt(state.lastSeed), video_format: format };
  try {
    let prediction = await api("POST", "/v1/predictions", { input });
    remember(prediction);
    while (!["succeeded", "failed", "canceled"].includes(prediction.status)) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      prediction = await api("GET", "/v1/predictions/" + encodeURIComponent(prediction.id));
    }
    remember(prediction);
    if (prediction.status !== "succeeded") throw new Error(prediction.error || "the job was " + prediction.status);
    const link = document.createElement("a");
    link.href = new URL(prediction.output, location.href).pathname;
    link.download = "";
    link.click();
  } catch (error) {
    $("formats-error").textContent = format + ": " + error.message;
  }
}

// --- recent jobs of this tab (session storage) --------------------------------------------------------

function recentJobs() {
  try { return JSON.parse(sessionStorage.getItem("svd-recent") || "[]"); } catch (_) { return []; }
}

function remember(prediction) {
  const jobs = recentJobs().filter((job) => job.id !== prediction.id);
  jobs.unshift({ id: prediction.id, status: prediction.status, output: prediction.output, created: prediction.created_at });
  sessionStorage.setItem("svd-recent", JSON.stringify(jobs.slice(0, 20)));
  renderRecent();
}

function renderRecent() {
  const list = $("recent");
  list.replaceChildren();
  for (const job of recentJobs()) {
    const item = document.createElement("li");
    item.textContent = `${job.id} · ${job.status} · ${(job.created || "").slice(11, 19)} `;
    if (job.output) {
      const link = document.createElement("a");
      link.href = new URL(job.output, location.href).pathname;
      link.textContent = "video";
      item.append(link);
    }
    list.append(item);
  }
}

// --- runtime status -----------------------------------------------------------------------------------

async function loadRuntime() {
  if (!$("token").value.trim()) return;
  try {
    const status = await api("GET", `/v1/model-families/${FORGE_SLUG}/status`);
    let text = "Model: " + status.status;
    if (status.keep_warm) text += " (kept warm)";
    else if (status.keep_warm_left_seconds !== null) text += ` (warm for ${Math.round(status.keep_warm_left_seconds)} s more)`;
    try {
      const estimate = await api("GET", `/v1/models/${FORGE_SLUG}/run-estimate`);
      if (estimate.warm_request_ms_p50 !== null) text += ` · a request takes about ${(estimate.warm_request_ms_p50 / 1000).toFixed(1)} s`;
    } catch (_) { /* no estimate yet */ }
    $("runtime").textContent = text;
  } catch (error) {
    $("runtime").textContent = error.status === 401 ? "Model state: the token was refused." : "Model state unknown: " + error.message;
  }
}

// --- "copy as" snippets -------------------------------------------------------------------------------

function pythonValue(value) {
  return typeof value === "string" ? JSON.stringify(value) : String(value);  // a BigInt's String() is its digits
}

function renderSnippet() {
  const input = collectInput();
  delete input.image;
  const origin = location.origin;
  const params = Object.entries(input).filter(([name]) => name !== "prompt");
  const json = (body) => toJson(body, 2);
  let text;
  if (state.snippet === "curl") {
    const body = json({ input: { image: "IMAGE", ...input } }).replace('"IMAGE"', `"data:image/png;base64,'"$(base64 -w0 photo.png)"'"`);
    text = `curl -s ${origin}/v1/predictions \\\n  -H "Authorization: Bearer $SVD_TRITON_TOKEN" \\\n` +
      `  -H "Content-Type: application/json" -H "Prefer: wait" \\\n  -d '${body}'`;
  } else if (state.snippet === "replicate") {
    const fields = [`"image": open("photo.png", "rb")`, ...Object.entries(input).map(([k, v]) => `"${k}": ${pythonValue(v)}`)];
    text = `import os\nimport replicate\n\nclient = replicate.Client(api_token=os.environ["SVD_TRITON_TOKEN"], base_url="${origin}")\n` +
      `output = client.run("stability-ai/stable-video-diffusion", input={\n    ${fields.join(",\n    ")},\n})\nprint(output)`;
  } else if (state.snippet === "openai") {
    text = openaiSnippet(input, origin);
  } else if (state.snippet === "stability") {
    text = stabilitySnippet(input, origin);
  } else if (state.snippet === "tritonclient") {
    const types = Object.fromEntries(state.parameters.map((p) => [p.name, p.datatype || "BYTES"]));
    const numpy = { INT32: "np.int32", INT64: "np.int64", FP32: "np.float32", BYTES: "object" };
    const lines = params.map(([k, v]) => `    ("${k.toUpperCase()}", ${pythonValue(v)}, "${types[k]}", ${numpy[types[k]] || "object"}),`);
    text = `# Straight to Triton (HTTP port; a streaming deployment needs tritonclient.grpc's stream_infer).\n` +
      `import os\nimport numpy as np\nimport tritonclient.http as httpclient\n\n` +
      `client = httpclient.InferenceServerClient("localhost:8000", network_timeout=900)\n` +
      `image = httpclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")\n` +
      `image.set_data_from_numpy(np.array([[open("photo.png", "rb").read()]], dtype=object))\ninputs = [image]\n` +
      `for name, value, datatype, dtype in [\n${lines.join("\n")}\n]:\n` +
      `    tensor = httpclient.InferInput(name, [1, 1], datatype)\n` +
      `    tensor.set_data_from_numpy(np.array([[value.encode() if dtype is object else value]], dtype=dtype))\n` +
      `    inputs.append(tensor)\n` +
      `result = client.infer("svd_xt", inputs, headers={"authorization": "Bearer " + os.environ["SVD_TRITON_TOKEN"]},\n` +
      `                      outputs=[httpclient.InferRequestedOutput("VIDEO"), httpclient.InferRequestedOutput("SEED_USED")])\n` +
      `open("video.mp4", "wb").write(result.as_numpy("VIDEO").reshape(-1)[0])`;
  } else {
    const body = { image: "data:image/png;base64,<base64 of photo.png>", ...input };
    text = `# E2E TIR: POST ${origin}/predict\n${json({ ...body, image: "<base64 of photo.png>" })}\n\n` +
      `# Nebius Forge: POST ${origin}/v1/inference/${FORGE_SLUG}\n${json(body)}\n\n` +
      `# OpenAI-style: POST ${origin}/v1/video/generations\n${json({ ...body, response_format: "url" })}`;
  }
  $("snippet").textContent = text;
}

/** OpenAI's Videos API (the official Python SDK): width×height as `size`, segments as `seconds` (4 each), the
 * rest as extra body fields; the API serves MP4, so another video_format (and its quality scale) is left out. */
function openaiSnippet(input, origin) {
  const { prompt = "", video_format: format, width, height, segments, ...extra } = input;
  const args = [`prompt=${pythonValue(prompt)}`, `input_reference=open("photo.png", "rb")`];
  if (width !== undefined && height !== undefined) args.push(`size="${width}x${height}"`);
  else Object.assign(extra, width !== undefined ? { width } : {}, height !== undefined ? { height } : {});
  if (segments !== undefined) args.push(`seconds="${4 * segments}"`);
  if (format && format !== "mp4") delete extra.video_quality;
  const fields = Object.entries(extra).map(([k, v]) => `"${k}": ${pythonValue(v)}`);
  if (fields.length) args.push(`extra_body={${fields.join(", ")}}`);
  return `import os\nfrom openai import OpenAI\n\n` +
    `client = OpenAI(base_url="${origin}/v1", api_key=os.environ["SVD_TRITON_TOKEN"])\n` +
    `video = client.videos.create_and_poll(\n    ${args.join(",\n    ")},\n)\n` +
    `client.videos.download_content(video.id).write_to_file("video.mp4")\nprint(video.status, video.id)`;
}

/** Stability AI's v2beta image-to-video with curl, as its documentation samples it: a multipart post, then the
 * result polled with `accept: video/*` until it stops answering 202. max_guidance_scale is Stability's cfg_scale. */
function stabilitySnippet(input, origin) {
  const { prompt, max_guidance_scale: cfg, ...fields } = input;  // the prompt stays out: Stability's API has none
  if (cfg !== undefined) fields.cfg_scale = cfg;
  const file = `video.${input.video_format || "mp4"}`;
  const auth = `-H "authorization: Bearer $SVD_TRITON_TOKEN"`;
  const form = Object.entries(fields).map(([k, v]) => `  -F "${k}=${v}" \\\n`).join("");
  return `id=$(curl -sSf ${origin}/v2beta/image-to-video ${auth} \\\n  -F image=@photo.png \\\n${form}` +
    `  | sed -E 's/.*"id": *"([^"]+)".*/\\1/')\n` +
    `while [ "$(curl -sS -o ${file} -w '%{http_code}' ${origin}/v2beta/image-to-video/result/$id \\\n` +
    `      ${auth} -H "accept: video/*")" = 202 ]; do sleep 2; done`;
}

function setUpSnippets() {
  for (const tab of document.querySelectorAll("[data-snippet]")) {
    tab.addEventListener("click", () => {
      state.snippet = tab.dataset.snippet;
      for (const other of document.querySelectorAll("[data-snippet]")) other.setAttribute("aria-pressed", String(other === tab));
      renderSnippet();
    });
  }
  $("prompt").addEventListener("change", renderSnippet);
  $("copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("snippet").textContent);
      $("copy-status").textContent = "Copied.";
    } catch (_) {
      $("copy-status").textContent = "Select the text and copy it (the clipboard is not available here).";
    }
  });
}

// --- start --------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const token = $("token");
  token.value = sessionStorage.getItem("svd-token") || "";
  token.addEventListener("change", () => {
    sessionStorage.setItem("svd-token", token.value.trim());
    $("token-error").textContent = "";
    token.removeAttribute("aria-invalid");
    loadRuntime();
  });
  $("generate").addEventListener("click", generate);
  $("cancel").addEventListener("click", cancel);
  setUpDropZone();
  setUpSnippets();
  renderRecent();
  loadParameters();
  loadRuntime();
});
