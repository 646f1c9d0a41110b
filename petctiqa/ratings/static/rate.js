// Reader-study client: keys 0-4 rate, Backspace/U undo, Enter continues training/break screens.
// Every answer is sent to the server at once; the page always renders the server's state, so a
// reload or a server restart resumes exactly where the rater stopped.
"use strict";
(function () {
  const body = document.body;
  const token = body.dataset.token;
  const scoreMin = Number(body.dataset.min);
  const scoreMax = Number(body.dataset.max);
  const api = "/api/r/" + token;
  const img = document.getElementById("stimulus");
  const progress = document.getElementById("progress");
  const count = document.getElementById("count");
  const undoButton = document.getElementById("undo");
  const message = document.getElementById("message");
  const training = document.getElementById("training");
  const trainingCaption = document.getElementById("training-caption");
  const breakBox = document.getElementById("break");
  const doneBox = document.getElementById("done");

  let state = null;
  let busy = false;
  let trainingIndex = -1;
  let onBreak = false;
  // Score keys count only once the image they judge is on screen: false from the moment a new
  // image is requested until its load event (a fast key press must not rate an image the rater
  // has not seen).
  let imageReady = false;
  let shownUrl = null;
  const WAIT_MESSAGE = "Wait until the image is shown.";

  function setReady(ready) {
    imageReady = ready;
    body.dataset.ready = ready ? "1" : "0";
  }

  // One image pixel = one device pixel: CSS size = pixel size / devicePixelRatio, so neither a
  // HiDPI screen nor browser zoom resamples the distortion the rater must judge.
  function sizeToDevicePixels(width, height) {
    const ratio = window.devicePixelRatio || 1;
    img.style.width = width ? (width / ratio) + "px" : "";
    img.style.height = height ? (height / ratio) + "px" : "";
  }

  function showImage(url, width, height) {
    img.hidden = false;
    if (url === shownUrl && imageReady) return;  // already on screen
    setReady(false);
    shownUrl = url;
    img.removeAttribute("src");
    img.removeAttribute("width");
    img.removeAttribute("height");
    sizeToDevicePixels(width, height);
    img.src = url;
  }

  img.addEventListener("load", function () {
    if (img.getAttribute("src") !== shownUrl) return;  // a stale image
    sizeToDevicePixels(img.naturalWidth, img.naturalHeight);
    setReady(true);
    if (message.textContent === WAIT_MESSAGE) message.textContent = "";
  });
  img.addEventListener("error", function () {
    if (img.getAttribute("src") !== shownUrl) return;
    message.textContent = "The image could not be loaded; reload the page.";
  });

  function watchPixelRatio() {
    // zoom or a move to another screen changes devicePixelRatio: keep 1:1 device pixels
    const query = window.matchMedia("(resolution: " + (window.devicePixelRatio || 1) + "dppx)");
    query.addEventListener("change", function () {
      if (img.naturalWidth) sizeToDevicePixels(img.naturalWidth, img.naturalHeight);
      watchPixelRatio();
    }, { once: true });
  }

  function render() {
    progress.max = Math.max(state.total, 1);
    progress.value = state.done;
    count.textContent = state.done + " / " + state.total;
    undoButton.disabled = !state.can_undo;
    body.dataset.done = String(state.done);
    if (trainingIndex >= 0) {
      const item = state.training[trainingIndex];
      training.hidden = false;
      trainingCaption.textContent = item.caption + "  (" + (trainingIndex + 1) + " / " + state.training.length + ")";
      showImage(item.url, item.width, item.height);
      img.dataset.image = "";
      return;
    }
    training.hidden = true;
    if (state.current === null) {
      img.hidden = true;
      shownUrl = null;
      setReady(false);
      img.dataset.image = "";
      doneBox.hidden = false;
      return;
    }
    doneBox.hidden = true;
    showImage(state.current.url, state.current.width, state.current.height);
    img.dataset.image = state.current.image;
    img.dataset.position = String(state.current.position);
  }

  async function call(method, path, payload) {
    const options = { method: method, headers: { "Content-Type": "application/json" } };
    if (payload !== undefined) options.body = JSON.stringify(payload);
    const response = await fetch(api + path, options);
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || ("HTTP " + response.status));
    return data;
  }

  async function load() {
    try {
      state = await call("GET", "/state");
      trainingIndex = state.training.length > 0 ? 0 : -1;
      message.textContent = "";
      render();
    } catch (err) {
      message.textContent = "Cannot reach the study server: " + err.message;
    }
  }

  async function rate(score) {
    if (busy || onBreak || trainingIndex >= 0 || !state || state.current === null) return;
    if (!imageReady) { message.textContent = WAIT_MESSAGE; return; }
    busy = true;
    try {
      const data = await call("POST", "/rating", {
        image: state.current.image, position: state.current.position, score: score });
      state = data.state;
      message.textContent = "";
      const every = state.break_every;
      if (every > 0 && state.done > 0 && state.done % every === 0 && state.current !== null) {
        onBreak = true;
        breakBox.hidden = false;
      }
      render();
    } catch (err) {
      message.textContent = "Not saved: " + err.message;
      await load();
    } finally {
      busy = false;
    }
  }

  async function undo() {
    if (busy || trainingIndex >= 0 || !state || !state.can_undo) return;
    busy = true;
    try {
      const data = await call("POST", "/undo");
      state = data.state;
      message.textContent = "Undone: your last rating was withdrawn.";
      onBreak = false;
      breakBox.hidden = true;
      render();
    } catch (err) {
      message.textContent = err.message;
    } finally {
      busy = false;
    }
  }

  async function nextTraining() {
    if (trainingIndex < 0) return;
    trainingIndex += 1;
    if (trainingIndex >= state.training.length) {
      trainingIndex = -1;
      try { state = (await call("POST", "/training-done")).state; } catch (err) { message.textContent = err.message; }
    }
    render();
  }

  function endBreak() {
    onBreak = false;
    breakBox.hidden = true;
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.altKey || event.metaKey) return;
    const key = event.key;
    if (trainingIndex >= 0) {
      if (key === "Enter" || key === " " || key === "ArrowRight") { event.preventDefault(); nextTraining(); }
      return;
    }
    if (onBreak) {
      if (key === "Enter" || key === " ") { event.preventDefault(); endBreak(); }
      return;
    }
    if (/^[0-9]$/.test(key)) {
      const score = Number(key);
      if (score >= scoreMin && score <= scoreMax) { event.preventDefault(); rate(score); }
      return;
    }
    if (key === "Backspace" || key === "u" || key === "U") { event.preventDefault(); undo(); }
  });
  undoButton.addEventListener("click", undo);
  document.getElementById("training-next").addEventListener("click", nextTraining);
  document.getElementById("break-continue").addEventListener("click", endBreak);
  for (const button of document.querySelectorAll("button.score")) {
    button.addEventListener("click", function () { rate(Number(button.dataset.score)); });
  }
  setReady(false);
  watchPixelRatio();
  load();
})();
