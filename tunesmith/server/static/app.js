// tunesmith's page: a form that posts /api/jobs, and a job list kept from the server's /api/jobs, with
// live progress over Server-Sent Events (/api/jobs/{id}/events). No framework, no build step.
"use strict";

const FINISHED = ["done", "error", "cancelled"];
const NUMBERS = ["temperature", "top_k", "top_p", "cfg", "cfg_beta", "steps", "strength", "fade_in", "fade_out",
  "loudness"];
const INTEGERS = ["top_k", "steps"];
const DOWNLOADS = ["wav", "flac", "mp3"];

const $ = (selector, root = document) => root.querySelector(selector);
const models = new Map(); // name -> {name, model_type, longest, ...}
const cards = new Map(); // job id -> {element, job, events}

// ---- talking to the server

function token() {
  return localStorage.getItem("tunesmith-token") || "";
}

function withToken(url) {
  // GET routes take ?access_token= where a header cannot be set (<audio src>, EventSource)
  if (!token()) return url;
  return url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token());
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    const given = prompt("This server needs its access token (the --token it was started with):");
    if (given) {
      localStorage.setItem("tunesmith-token", given.trim());
      return api(path, options);
    }
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : `${response.status} ${response.statusText}`;
    throw new Error(detail);
  }
  return body;
}

// ---- the form

function family() {
  const model = models.get($("#model").value);
  return model ? model.model_type : "musicgen";
}

function showFamilyFields() {
  const current = family();
  for (const element of document.querySelectorAll("[data-family]")) {
    element.hidden = element.dataset.family !== current;
  }
  const model = models.get($("#model").value);
  for (const element of document.querySelectorAll("[data-style]")) element.hidden = !(model && model.style);
  for (const element of document.querySelectorAll("[data-melody]")) element.hidden = !(model && model.melody);
  $("#duration").max = model && model.longest ? model.longest.toFixed(2) : "";
}

async function loadModels() {
  const list = await api("/api/models");
  const select = $("#model");
  select.replaceChildren();
  for (const model of list) {
    models.set(model.name, model);
    const option = new Option(`${model.name}${model.is_loaded ? " (loaded)" : ""}`, model.name);
    option.selected = Boolean(model.default);
    select.append(option);
  }
  showFamilyFields();
}

async function uploadFile(input) {
  const file = input.files && input.files[0];
  if (!file) return null;
  const form = new FormData();
  form.append("file", file);
  const upload = await api("/api/uploads", { method: "POST", body: form });
  return upload.id;
}

async function jobBody() {
  const form = $("#make");
  const body = {
    model: $("#model").value || null,
    prompt: $("#prompt").value.trim(),
    duration: Number($("#duration").value),
    variations: Number($("#variations").value || 1),
    format: form.elements.format.value,
    loop: form.elements.loop.checked,
  };
  if ($("#seed").value !== "") body.seed = Number($("#seed").value);
  // each option from the visible fieldset only (both families have a "cfg")
  for (const input of form.querySelectorAll("#advanced input[name], #advanced textarea[name]")) {
    const owner = input.closest("[data-family], [data-style]");
    if ((owner && owner.hidden) || input.type === "checkbox" || input.value === "") continue;
    if (NUMBERS.includes(input.name)) {
      body[input.name] = INTEGERS.includes(input.name) ? parseInt(input.value, 10) : Number(input.value);
    } else {
      body[input.name] = input.value;
    }
  }
  body.continuation = await uploadFile($("#continuation"));
  if (body.continuation && family() === "acestep") {
    // a repaint: the song's own length, and the span to make anew (no end: to the song's end)
    const end = $("#repaint-end").value;
    body.repaint = [Number($("#repaint-start").value || 0), end === "" ? null : Number(end)];
    delete body.duration;
  }
  if (!$("#melody").closest("[data-melody]").hidden) body.melody = await uploadFile($("#melody"));
  if (!$("#style").closest("[data-style]").hidden) body.style = await uploadFile($("#style"));
  for (const key of Object.keys(body)) if (body[key] === null) delete body[key];
  return body;
}

async function submit(event) {
  event.preventDefault();
  const button = $("#submit");
  $("#form-error").textContent = "";
  button.disabled = true;
  try {
    const body = await jobBody();
    const job = await api("/api/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() },
      body: JSON.stringify(body),
    });
    showJob(job, true);
  } catch (error) {
    $("#form-error").textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

function again(job) {
  // the form filled with the job's request, its seed kept: the same music again, or a variation on it
  const request = job.request || {};
  const form = $("#make");
  if (models.has(job.model)) $("#model").value = job.model;
  showFamilyFields();
  $("#prompt").value = typeof request.prompt === "string" ? request.prompt : job.prompt;
  $("#duration").value = request.duration ?? job.duration;
  $("#seed").value = job.seed;
  $("#variations").value = request.variations ?? 1;
  form.elements.loop.checked = Boolean(request.loop);
  form.elements.format.value = request.format || "wav";
  const values = Object.assign({}, request.options || {}, request.finishing || {});
  for (const input of form.querySelectorAll("#advanced input[name], #advanced textarea[name]")) {
    const owner = input.closest("[data-family], [data-style]");
    if ((owner && owner.hidden) || input.type === "checkbox") continue;
    input.value = values[input.name] ?? "";
  }
  $("#prompt").focus();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

// ---- the job list

function statusText(job) {
  if (job.status === "running" && job.total) return `running ${Math.round((100 * job.done) / job.total)}%`;
  if (job.status === "running" && job.cancel_requested) return "cancelling";
  return job.status;
}

function render(card) {
  const { element, job } = card;
  element.dataset.status = job.status;
  $(".job-prompt", element).textContent = job.prompt;
  $(".job-status", element).textContent = statusText(job);
  const seeds = job.seeds && job.seeds.length > 1 ? `seeds ${job.seeds.join(", ")}` : `seed ${job.seed}`;
  $(".job-meta", element).textContent = `${job.model} · ${Number(job.duration).toFixed(1)} s · ${seeds}`;
  const bar = $("progress", element);
  bar.value = job.status === "done" ? 1 : job.total ? job.done / job.total : 0;
  bar.hidden = FINISHED.includes(job.status) && job.status !== "done";
  $(".job-error", element).textContent = job.status === "error" || job.status === "cancelled" ? job.error || job.status : "";
  $(".cancel", element).hidden = FINISHED.includes(job.status);
  $(".delete", element).hidden = !FINISHED.includes(job.status);
  $(".stems", element).hidden = job.status !== "done" || job.family === "stems";
  $(".again", element).hidden = job.family === "stems";
  const files = $(".job-files", element);
  if (job.status === "done" && !files.childElementCount) {
    for (const file of job.files) files.append(fileView(job, file));
  }
}

function fileView(job, file) {
  const view = $("#file-template").content.firstElementChild.cloneNode(true);
  $(".stem-name", view).textContent = file.stem || "";
  const audio = $("audio", view);
  audio.src = withToken(file.url);
  const links = $(".downloads", view);
  for (const format of [file.format, ...DOWNLOADS.filter((f) => f !== file.format)]) {
    const link = document.createElement("a");
    link.href = withToken(`${file.url}&fmt=${format}`);
    link.download = "";
    link.className = "download";
    link.textContent = format.toUpperCase();
    link.title = `download as ${format}`;
    links.append(link);
  }
  if (file.check && file.check.ok === false) {
    const warning = document.createElement("span");
    warning.className = "error";
    warning.textContent = "failed the output check";
    links.append(warning);
  }
  drawWave($("canvas", view), withToken(file.url), audio);
  return view;
}

async function drawWave(canvas, url, audio) {
  // the peaks of each pixel column, mirrored; a click seeks the player there
  try {
    const bytes = await (await fetch(url)).arrayBuffer();
    const context = new (window.OfflineAudioContext || window.webkitOfflineAudioContext)(1, 1, 44100);
    const buffer = await context.decodeAudioData(bytes);
    const width = (canvas.width = canvas.clientWidth * (window.devicePixelRatio || 1) || 600);
    const height = canvas.height;
    const data = buffer.getChannelData(0);
    const step = Math.max(1, Math.floor(data.length / width));
    const peaks = new Float32Array(width);
    for (let x = 0; x < width; x++) {
      for (let i = x * step; i < Math.min(data.length, (x + 1) * step); i++) peaks[x] = Math.max(peaks[x], Math.abs(data[i]));
    }
    const loudest = Math.max(...peaks) || 1; // drawn to the clip's own peak: quiet clips still show their shape
    const draw = canvas.getContext("2d");
    draw.fillStyle = getComputedStyle(canvas).color;
    for (let x = 0; x < width; x++) {
      const h = Math.max(1, (peaks[x] / loudest) * height);
      draw.fillRect(x, (height - h) / 2, 1, h);
    }
    canvas.dataset.drawn = "true";
    canvas.addEventListener("click", (event) => {
      audio.currentTime = (event.offsetX / canvas.clientWidth) * buffer.duration;
      audio.play();
    });
  } catch (_) {
    canvas.hidden = true; // the player still works without the picture
  }
}

function showJob(job, atTop = false) {
  let card = cards.get(job.id);
  if (!card) {
    const element = $("#job-template").content.firstElementChild.cloneNode(true);
    element.dataset.id = job.id;
    card = { element, job, events: null };
    cards.set(job.id, card);
    $(".cancel", element).addEventListener("click", () => cancel(card));
    $(".delete", element).addEventListener("click", () => remove(card));
    $(".again", element).addEventListener("click", () => again(card.job));
    $(".stems", element).addEventListener("click", () => splitStems(card));
    if (atTop) $("#jobs").prepend(element);
    else $("#jobs").append(element);
  }
  card.job = Object.assign({}, card.job, job);
  render(card);
  $("#empty").hidden = cards.size > 0;
  if (!FINISHED.includes(card.job.status) && !card.events) follow(card);
  return card;
}

function follow(card) {
  const events = new EventSource(withToken(`/api/jobs/${card.job.id}/events`));
  card.events = events;
  const stop = () => {
    events.close();
    card.events = null;
  };
  events.addEventListener("progress", (event) => showJob(JSON.parse(event.data)));
  events.addEventListener("done", (event) => {
    stop();
    showJob(JSON.parse(event.data));
  });
  events.addEventListener("error", (event) => {
    if (event.data) {
      stop();
      showJob(JSON.parse(event.data));
    } // without data: the connection dropped, and EventSource reconnects by itself
  });
}

async function cancel(card) {
  try {
    showJob(await api(`/api/jobs/${card.job.id}/cancel`, { method: "POST" }));
  } catch (error) {
    $(".job-error", card.element).textContent = error.message;
  }
}

async function splitStems(card) {
  // a job of its own, whose files are the stems of this job's first clip
  try {
    const job = await api(`/api/jobs/${card.job.id}/stems`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() },
      body: JSON.stringify({ index: 0 }),
    });
    showJob(job, true);
  } catch (error) {
    $(".job-error", card.element).textContent = error.message;
  }
}

async function remove(card) {
  try {
    await api(`/api/jobs/${card.job.id}`, { method: "DELETE" });
    if (card.events) card.events.close();
    card.element.remove();
    cards.delete(card.job.id);
    $("#empty").hidden = cards.size > 0;
  } catch (error) {
    $(".job-error", card.element).textContent = error.message;
  }
}

async function start() {
  $("#make").addEventListener("submit", submit);
  $("#model").addEventListener("change", showFamilyFields);
  try {
    const health = await api("/api/health");
    $("#health").textContent = `v${health.version}`;
    await loadModels();
    for (const job of await api("/api/jobs")) showJob(job); // newest first, as the server lists them
  } catch (error) {
    $("#form-error").textContent = error.message;
  }
}

start();
