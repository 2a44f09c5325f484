// The try-it page: sends each picked photo to POST /predict (the public endpoint) and draws the
// answer. The API key lives in sessionStorage only: it is gone when the tab is closed.
"use strict";

(() => {
  const KEY_STORAGE = "fashion-gateway-api-key";
  const CONCURRENCY = 2;

  const $ = (id) => document.getElementById(id);
  const keyInput = $("api-key");
  const topK = $("top-k");
  const picker = $("picker");
  const drop = $("drop");
  const results = $("results");
  const empty = $("empty");
  const clear = $("clear");
  const announce = $("announce");
  const template = $("card-template");
  const previews = [];

  let describeTimer = 0;
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("input", () => {
    if (keyInput.value) sessionStorage.setItem(KEY_STORAGE, keyInput.value);
    else sessionStorage.removeItem(KEY_STORAGE);
    window.clearTimeout(describeTimer);
    describeTimer = window.setTimeout(describeModel, 300);
  });

  function headers() {
    const h = {};
    if (keyInput.value) h["X-API-Key"] = keyInput.value;
    return h;
  }

  function percent(p) {
    const v = p * 100;
    return (v >= 99.95 || v < 0.05 ? v.toFixed(0) : v.toFixed(1)) + "%";
  }

  function say(text) {
    // Screen readers announce the status region; a fresh node makes repeats announced too.
    announce.textContent = "";
    window.setTimeout(() => { announce.textContent = text; }, 50);
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  async function describeModel() {
    const model = $("model");
    try {
      const response = await fetch("/classes", { headers: headers() });
      const body = await readJson(response);
      if (!response.ok) {
        const err = (body && body.error) || { code: "http_" + response.status, message: "" };
        model.textContent = err.code === "unauthorized"
          ? "Model: enter the API key to see the live version."
          : `Model: not available (${err.code}: ${err.message})`;
        return;
      }
      model.textContent = `Model ${body.model.name}, version ${body.model.version} · `
        + `${body.classes.length} classes: ${body.classes.join(", ")}`;
    } catch (e) {
      model.textContent = "Model: the gateway cannot be reached.";
    }
  }

  function card(file) {
    const node = template.content.firstElementChild.cloneNode(true);
    const url = URL.createObjectURL(file);
    previews.push(url);
    const img = node.querySelector("img");
    img.src = url;
    img.alt = `Preview of ${file.name}`;
    node.querySelector(".name").textContent = file.name;
    results.prepend(node);
    empty.hidden = true;
    clear.disabled = false;
    return node;
  }

  function setState(node, text, kind) {
    const state = node.querySelector(".state");
    state.textContent = text;
    state.className = "state " + kind;
  }

  function showPrediction(node, file, body, ms, response) {
    const p = body.prediction;
    const version = body.model.version;
    const bars = node.querySelector(".bars");
    bars.replaceChildren();
    for (const entry of p.top_k) {
      const li = document.createElement("li");
      li.className = "bar-row" + (entry.class_id === p.class_id ? " top" : "");
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = entry.label;
      const track = document.createElement("span");
      track.className = "bar";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = Math.max(0.5, entry.probability * 100).toFixed(2) + "%";
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = percent(entry.probability);
      li.append(label, track, value);
      bars.append(li);
    }
    const verdict = node.querySelector(".verdict");
    verdict.replaceChildren();
    const strong = document.createElement("strong");
    strong.className = "label";
    strong.textContent = p.label;
    verdict.append(strong, ` ${percent(p.confidence)}`);
    let spoken = `${file.name}: ${p.label}, ${percent(p.confidence)}`;
    if ("abstain" in p) {
      const flag = document.createElement("span");
      flag.className = "flag " + (p.abstain ? "abstain" : "filed");
      if (p.abstain) {
        const why = (p.abstain_reason || "").replaceAll("_", " ");
        flag.textContent = `abstains: ${why}`;
        spoken += `; the model abstains: ${why}`;
      } else {
        flag.textContent = "sure enough to file";
      }
      if (typeof p.known_probability === "number") {
        flag.title = `probability that this is one of the known categories: `
          + percent(p.known_probability);
      }
      verdict.append(" ", flag);
    }
    const meta = node.querySelector(".meta");
    const cache = response.headers.get("X-Cache");
    const parts = [`version ${version}`, `${ms.toFixed(0)} ms`];
    if (cache) parts.push(`cache ${cache}`);
    meta.textContent = parts.join(" · ");
    meta.dataset.version = String(version);
    node.title = `request id ${response.headers.get("X-Request-Id") || "?"}`;
    setState(node, p.abstain ? "abstained" : "done", p.abstain ? "warn" : "ok");
    say(`${spoken}. Model version ${version}.`);
  }

  function showError(node, file, code, message, ms) {
    const verdict = node.querySelector(".verdict");
    verdict.replaceChildren();
    const c = document.createElement("code");
    c.className = "error-code";
    c.textContent = code;
    verdict.append(c, " ", message);
    node.querySelector(".meta").textContent = `${ms.toFixed(0)} ms`;
    node.classList.add("failed");
    setState(node, "error", "bad");
    say(`${file.name}: error ${code}. ${message}`);
  }

  async function classify(file) {
    const node = card(file);
    const form = new FormData();
    form.append("image", file, file.name);
    const started = performance.now();
    try {
      const response = await fetch(`/predict?top_k=${encodeURIComponent(topK.value)}`, {
        method: "POST",
        headers: headers(),
        body: form,
      });
      const ms = performance.now() - started;
      const body = await readJson(response);
      if (response.ok && body && body.prediction) {
        showPrediction(node, file, body, ms, response);
      } else {
        const err = (body && body.error) || { code: `http_${response.status}`, message: "" };
        let message = err.message;
        const retry = response.headers.get("Retry-After");
        if (retry) message += ` (retry after ${retry} s)`;
        showError(node, file, err.code, message, ms);
      }
    } catch (e) {
      showError(node, file, "network_error", "the gateway cannot be reached", 0);
    }
  }

  async function classifyAll(files) {
    const queue = Array.from(files).filter((f) => f.size > 0 || f.name);
    if (!queue.length) return;
    say(`Classifying ${queue.length} photo${queue.length > 1 ? "s" : ""}…`);
    const workers = Array.from({ length: Math.min(CONCURRENCY, queue.length) }, async () => {
      while (queue.length) await classify(queue.shift());
    });
    await Promise.all(workers);
  }

  picker.addEventListener("change", () => {
    classifyAll(picker.files).finally(() => { picker.value = ""; });
  });

  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      classifyAll(event.dataTransfer.files);
    }
  });

  clear.addEventListener("click", () => {
    results.replaceChildren();
    for (const url of previews.splice(0)) URL.revokeObjectURL(url);
    empty.hidden = false;
    clear.disabled = true;
    say("Results cleared.");
    picker.focus();
  });

  describeModel();
})();
