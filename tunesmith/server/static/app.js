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
const loras = { names: [], active: { model: null, loras: [] } }; // GET /api/loras
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

// A few prompts per family, one click away: what each family is good at, written as it likes to be asked.
const EXAMPLES = {
  musicgen: [
    { label: "lofi beat", prompt: "lofi hip hop beat, dusty vinyl, mellow rhodes, relaxed drums, 80 bpm" },
    { label: "synthwave", prompt: "80s synthwave, driving bassline, gated drums, bright analog leads, 110 bpm" },
    { label: "folk guitar", prompt: "warm acoustic folk guitar, fingerpicked, intimate, soft room sound" },
    { label: "trailer", prompt: "epic orchestral trailer music, big brass, taiko drums, rising strings" },
  ],
  stable_audio: [
    { label: "drum loop", prompt: "128 BPM tech house drum loop, punchy kick, crisp hats", loop: true, seconds: 7.5 },
    { label: "ambient pad", prompt: "warm ambient pad, slowly evolving, C minor, lush reverb" },
    { label: "rain", prompt: "gentle rain on a window, distant thunder, field recording" },
    { label: "bass loop", prompt: "deep house bassline loop, 124 BPM, A minor, analog synth", loop: true, seconds: 7.74 },
  ],
  acestep: [
    {
      label: "indie pop song", prompt: "indie pop, female vocals, bright guitars, upbeat, 110 bpm", seconds: 30,
      lyrics: "[verse]\nStreetlights hum a song I know\nFootsteps echo, soft and slow\n\n[chorus]\n" +
        "Stay, stay, the night is young\nEvery word is on my tongue",
    },
    {
      label: "ballad", prompt: "piano ballad, male vocals, heartfelt, slow, 70 bpm", seconds: 30,
      lyrics: "[verse]\nOld photographs across the floor\nI don't live here anymore\n\n[chorus]\n" +
        "But I still hear you call my name\nNothing's ever quite the same",
    },
    { label: "instrumental", prompt: "cinematic post-rock instrumental, swelling guitars, building drums", seconds: 30 },
  ],
};

function currentModel() {
  return models.get($("#model").value);
}

function family() {
  const model = currentModel();
  return model ? model.model_type : "musicgen";
}

function seconds(value) {
  // for people: 11.9 s, 300 s, 7.5 s
  return `${Number(value.toFixed(1))} s`;
}

function showFamilyFields() {
  const current = family();
  for (const element of document.querySelectorAll("[data-family]")) {
    element.hidden = !element.dataset.family.split(" ").includes(current); // "stable_audio stable_audio3"
  }
  const model = currentModel();
  for (const element of document.querySelectorAll("[data-style]")) element.hidden = !(model && model.style);
  for (const element of document.querySelectorAll("[data-melody]")) element.hidden = !(model && model.melody);
  showLoras(model);
  showModelInfo(model);
  showExamples(current);
}

function showModelInfo(model) {
  // the family, the clip lengths this server takes, the licence; the Seconds field follows the lengths
  const duration = $("#duration");
  const info = $("#model-info");
  info.replaceChildren();
  if (!model) return;
  const longest = model.max_duration ?? model.longest;
  duration.max = longest ? String(Math.floor(longest * 100) / 100) : "";
  duration.min = model.shortest ? String(model.shortest) : "0.1";
  if (longest && Number(duration.value) > longest) duration.value = duration.max;
  if (model.shortest && Number(duration.value) < model.shortest) duration.value = duration.min;
  const range = model.shortest ? `${seconds(model.shortest)} to ${seconds(longest)}` : `up to ${seconds(longest)}`;
  const family = document.createElement("strong");
  family.textContent = model.family_name || model.model_type;
  const licence = document.createElement("span");
  licence.className = "licence";
  licence.textContent = model.licence ? `licence ${model.licence}` : "licence: see its model card";
  licence.title = model.licence_terms || "a local checkpoint: its model card says how its music may be used";
  info.append(family, ` · ${range} · `, licence);
  if (model.is_loaded) info.append(" · loaded");
}

function showExamples(current) {
  const box = $("#examples");
  for (const old of box.querySelectorAll("button")) old.remove();
  for (const example of EXAMPLES[current] || []) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.textContent = example.label;
    button.title = example.prompt;
    button.addEventListener("click", () => useExample(example));
    box.append(button);
  }
}

function useExample(example) {
  const form = $("#make");
  $("#prompt").value = example.prompt;
  if (example.lyrics !== undefined || family() === "acestep") form.elements.lyrics.value = example.lyrics || "";
  form.elements.loop.checked = Boolean(example.loop);
  if (example.seconds) {
    const duration = $("#duration");
    const longest = Number(duration.max) || Infinity;
    duration.value = String(Math.min(example.seconds, longest));
  }
  $("#prompt").focus();
}

// ---- LoRA adapters: the server's --lora-dir, by name (GET /api/loras); one picked, with its strength

function showLoras(model) {
  // shown for models that take adapters when the server offers some; the first choice is what a job without
  // the field runs (the server's --lora set for its default model, else none)
  const fields = $("#lora-fields");
  fields.hidden = !(model && model.lora && loras.names.length);
  const select = $("#lora");
  const kept = select.value;
  select.replaceChildren();
  const served = model && loras.active.model === model.name ? loras.active.loras : [];
  const running = served.map((l) => `${l.name}@${l.scale}`).join(" + ");
  select.append(new Option(running ? `server's: ${running}` : "none", ""));
  if (running) select.append(new Option("none", "-"));
  for (const name of loras.names) select.append(new Option(name, name));
  select.value = [...select.options].some((o) => o.value === kept) ? kept : "";
  showScale();
}

function showScale() {
  const picked = !["", "-"].includes($("#lora").value);
  $("#lora-scale").disabled = !picked;
  $("#lora-scale-shown").textContent = Number($("#lora-scale").value).toFixed(2);
}

function loraField() {
  // the job's lora: undefined (the server's set), [] (none) or ["name@scale"]
  if ($("#lora-fields").hidden) return undefined;
  const value = $("#lora").value;
  if (value === "") return undefined;
  if (value === "-") return [];
  return [`${value}@${Number($("#lora-scale").value)}`];
}

async function loadLoras() {
  try {
    const listed = await api("/api/loras");
    loras.names = listed.loras.map((l) => l.name);
    loras.active = listed.active;
  } catch (_) {
    loras.names = []; // an older server: no picker
  }
  showLoras(currentModel());
}

async function loadModels() {
  const list = await api("/api/models");
  const select = $("#model");
  select.replaceChildren();
  for (const model of list) {
    models.set(model.name, model);
    const option = new Option(`${model.name} · ${model.family_name || model.model_type}`, model.name);
    option.selected = Boolean(model.default);
    select.append(option);
  }
  showFamilyFields();
}

function problem() {
  // the first field the browser finds wrong, said in one line with its label ("Seconds: Value must be ...")
  const form = $("#make");
  for (const input of form.elements) {
    if (!input.willValidate || input.closest("[hidden]") || input.checkValidity()) continue;
    const details = input.closest("details");
    if (details) details.open = true;
    input.focus();
    const label = input.labels && input.labels[0];
    const name = label ? label.firstChild.textContent.trim() : input.name;
    return `${name || "this field"}: ${input.validationMessage}`;
  }
  return null;
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
  const lora = loraField();
  if (lora !== undefined) body.lora = lora;
  body.continuation = await uploadFile($("#continuation"));
  if (family() === "stable_audio3") {
    // repaint spans of the init audio ("4:8, 12:" -> [[4, 8], [12, null]]), or audio to extend, kept whole
    const spans = $("#repaint-spans").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (spans.length) {
      body.repaint = spans.map((span) => span.split(":").map((v) => (v.trim() === "" ? null : Number(v))));
    }
    body.extend = await uploadFile($("#extend"));
  }
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
  $("#form-error").textContent = problem() || "";
  if ($("#form-error").textContent) return;
  button.disabled = true;
  try {
    const body = await jobBody();
    const job = await api("/api/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() },
      body: JSON.stringify(body),
    });
    showJob(job, true, true);
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
  const repaint = values.repaint;
  if (family() === "stable_audio3") {
    const spans = repaint ? (Array.isArray(repaint[0]) ? repaint : [repaint]) : [];
    $("#repaint-spans").value = spans.map(([start, end]) => `${start}:${end ?? ""}`).join(", ");
  }
  againLora(request.lora);
  $("#prompt").focus();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

function againLora(stored) {
  // a job's [[name, scale], ...]: one adapter back in the picker; none -> "none"; a stack the picker cannot
  // show -> the server's choice
  const select = $("#lora");
  if (!stored || stored.length > 1 || (stored.length === 1 && !loras.names.includes(stored[0][0]))) {
    select.value = "";
  } else if (stored.length === 0) {
    select.value = [...select.options].some((o) => o.value === "-") ? "-" : "";
  } else {
    select.value = stored[0][0];
    $("#lora-scale").value = String(stored[0][1]);
  }
  showScale();
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
  const loop = job.request && job.request.loop ? " · loop" : "";
  $(".job-meta", element).textContent = `${job.model} · ${Number(job.duration).toFixed(1)} s${loop} · ${seeds}`;
  const bar = $("progress", element);
  bar.value = job.status === "done" ? 1 : job.total ? job.done / job.total : 0;
  bar.hidden = FINISHED.includes(job.status); // done: the player says it
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
    warning.className = "error check";
    const advice = file.check.advice || "the file was kept; listen to it, or try another seed";
    warning.textContent = `failed the output check${file.check.summary ? ": " + file.check.summary : ""}: ${advice}`;
    warning.title = advice;
    links.append(warning);
  }
  player(view, audio, file, Boolean(job.request && job.request.loop), job.duration);
  return view;
}

// ---- the player: play/pause, the time, a waveform with a playhead (click to seek), loop

const PEAKS = 2000; // columns of the waveform kept per clip, drawn to whatever width the canvas has
const shown = new IntersectionObserver((entries) => {
  // a clip is fetched and decoded for its waveform once it comes near the screen, not for all jobs at once
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    shown.unobserve(entry.target);
    entry.target.dispatchEvent(new Event("tunesmith:visible"));
  }
}, { rootMargin: "400px" });

function clock(value) {
  // 0:07.5 for a short clip, 2:05 for a song
  if (!Number.isFinite(value)) return "–:––";
  const short = value < 9.95;
  const whole = Math.max(0, short ? Math.round(value * 10) / 10 : Math.round(value));
  const minutes = Math.floor(whole / 60);
  const rest = whole - 60 * minutes;
  return `${minutes}:${rest < 10 ? "0" : ""}${rest.toFixed(short ? 1 : 0)}`;
}

let speaker = null; // the one AudioContext that plays loops, made at the first loop played

function player(view, audio, file, isLoop, expected) {
  // The <audio> element plays a clip once. A loop, once decoded, plays through Web Audio instead: an
  // AudioBufferSourceNode with loop=true goes round without the gap that <audio loop> leaves at the seam.
  const canvas = $("canvas", view);
  const play = $(".play", view);
  const time = $(".time", view);
  const loop = $(".loop", view);
  const state = { peaks: null, buffer: null, duration: Number(expected) || NaN, web: null };

  const length = () => (Number.isFinite(audio.duration) ? audio.duration : state.duration);
  const now = () => {
    if (!state.web) return audio.currentTime;
    return (speaker.currentTime - state.web.startedAt) % state.buffer.duration;
  };
  const playing = () => Boolean(state.web) || !audio.paused;
  const showTime = () => {
    time.textContent = `${clock(now())} / ${clock(length())}`;
    time.dataset.duration = Number.isFinite(length()) ? length().toFixed(2) : "";
  };
  const draw = () => drawWave(canvas, state.peaks, now() / length());
  const tick = () => {
    showTime();
    draw();
    view.dataset.playing = String(playing());
    if (playing()) requestAnimationFrame(tick);
  };
  const showPlaying = () => {
    document.dispatchEvent(new CustomEvent("tunesmith:play", { detail: view })); // one clip at a time
    play.textContent = "\u275A\u275A";
    play.setAttribute("aria-label", "pause");
    requestAnimationFrame(tick);
  };
  const showPaused = () => {
    if (playing()) return;
    play.textContent = "\u25B6";
    play.setAttribute("aria-label", "play");
    tick();
  };

  function startLoop(at) {
    speaker = speaker || new (window.AudioContext || window.webkitAudioContext)();
    const source = speaker.createBufferSource();
    source.buffer = state.buffer;
    source.loop = true;
    source.connect(speaker.destination);
    source.start(0, at % state.buffer.duration);
    state.web = { source, startedAt: speaker.currentTime - at };
    speaker.resume();
    showPlaying();
  }
  function stopLoop() {
    const at = now();
    state.web.source.stop();
    state.web = null;
    audio.currentTime = at;
    showPaused();
  }
  // play() is refused when a pause (or another clip) interrupts it: nothing to say then
  const start = () => (audio.loop && state.buffer ? startLoop(audio.currentTime) : audio.play().catch(() => {}));
  const pause = () => (state.web ? stopLoop() : audio.pause());

  audio.loop = isLoop; // a seamless loop is heard as one, over and over
  loop.setAttribute("aria-pressed", String(isLoop));
  loop.addEventListener("click", () => {
    const was = playing();
    pause();
    audio.loop = !audio.loop;
    loop.setAttribute("aria-pressed", String(audio.loop));
    if (was) start();
  });
  play.addEventListener("click", () => (playing() ? pause() : start()));
  audio.addEventListener("play", showPlaying);
  audio.addEventListener("pause", showPaused);
  document.addEventListener("tunesmith:play", (event) => {
    if (event.detail !== view && playing()) pause();
  });
  for (const event of ["loadedmetadata", "seeked", "ended"]) audio.addEventListener(event, tick);
  canvas.addEventListener("click", (event) => {
    if (!Number.isFinite(length())) return;
    if (state.web) stopLoop();
    audio.currentTime = Math.min(1, Math.max(0, event.offsetX / canvas.clientWidth)) * length();
    start();
    tick();
  });
  new ResizeObserver(draw).observe(canvas);
  canvas.addEventListener("tunesmith:visible", async () => {
    try {
      state.buffer = await decode(withToken(file.url));
      state.peaks = peaksOf(state.buffer);
      state.duration = state.buffer.duration;
      canvas.dataset.drawn = "true";
      tick();
    } catch (_) {
      canvas.dataset.drawn = "false"; // the player still works without the picture
    }
  });
  shown.observe(canvas);
  showTime();
}

async function decode(url) {
  const bytes = await (await fetch(url)).arrayBuffer();
  const context = new (window.OfflineAudioContext || window.webkitOfflineAudioContext)(1, 1, 44100);
  return context.decodeAudioData(bytes);
}

function peaksOf(buffer) {
  // the loudest sample of each column, over all channels, scaled to the clip's own peak: quiet clips still
  // show their shape
  const columns = Math.min(PEAKS, buffer.length);
  const peaks = new Float32Array(columns);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let x = 0; x < columns; x++) {
      const end = Math.floor(((x + 1) * data.length) / columns);
      for (let i = Math.floor((x * data.length) / columns); i < end; i++) peaks[x] = Math.max(peaks[x], Math.abs(data[i]));
    }
  }
  const loudest = peaks.reduce((a, b) => Math.max(a, b), 0) || 1;
  return peaks.map((p) => p / loudest);
}

function drawWave(canvas, peaks, played) {
  // mirrored bars; what has been played in the accent colour, the rest faint; the playhead a line
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
  const draw = canvas.getContext("2d");
  draw.clearRect(0, 0, width, height);
  const at = Number.isFinite(played) ? Math.min(1, Math.max(0, played)) : 0;
  canvas.dataset.playhead = at.toFixed(3);
  if (!peaks) return;
  draw.fillStyle = getComputedStyle(canvas).color;
  const bar = Math.max(1, Math.round(2 * ratio));
  for (let x = 0; x < width; x += bar + 1) {
    const peak = peaks[Math.min(peaks.length - 1, Math.floor((x / width) * peaks.length))];
    const h = Math.max(ratio, peak * height * 0.9);
    draw.globalAlpha = x / width < at ? 1 : 0.35;
    draw.fillRect(x, (height - h) / 2, bar, h);
  }
  draw.globalAlpha = 1;
  draw.fillRect(Math.min(width - bar, Math.round(at * width)), 0, bar, height);
}

function showJob(job, atTop = false, reveal = false) {
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
  if (reveal) card.element.scrollIntoView({ behavior: "smooth", block: "center" }); // the job just asked for
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
    showJob(job, true, true);
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
  $("#lora").addEventListener("change", showScale);
  $("#lora-scale").addEventListener("input", showScale);
  try {
    const health = await api("/api/health");
    $("#health").textContent = `v${health.version}`;
    await loadModels();
    await loadLoras();
    for (const job of await api("/api/jobs")) showJob(job); // newest first, as the server lists them
  } catch (error) {
    $("#form-error").textContent = error.message;
  }
}

start();
