// Reader-study client: keys 0-4 rate, Backspace/U undo, Enter continues training/break screens;
// + - O F M and the arrows drive the image viewer (viewer.js). Every answer is sent to the
// server at once, with how the image was viewed; the page always renders the server's state, so
// a reload or a server restart resumes exactly where the rater stopped. Training examples are
// shown in the same viewer as rated images (nothing laid over them), only a caption bar above.
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
  const scaleBar = document.getElementById("scale");
  const viewer = window.PetctiqaViewer.create({
    img: img,
    viewport: document.getElementById("viewport"),
    lens: document.getElementById("lens"),
    label: document.getElementById("zoom-level"),
    lensButton: document.getElementById("magnifier"),
  });
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

  function showImage(url, width, height) {
    img.hidden = false;
    if (url === shownUrl && imageReady) return;  // already on screen
    setReady(false);
    shownUrl = url;
    img.removeAttribute("src");
    img.removeAttribute("width");
    img.removeAttribute("height");
    viewer.prepare(width, height);
    img.src = url;
  }

  img.addEventListener("load", function () {
    if (img.getAttribute("src") !== shownUrl) return;  // a stale image
    viewer.shown(trainingIndex < 0);
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
      viewer.refresh();
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
      scaleBar.hidden = true;
      body.dataset.training = "1";
      trainingCaption.textContent = "Example " + (trainingIndex + 1) + " / " + state.training.length + ": " + item.caption;
      showImage(item.url, item.width, item.height);
      img.dataset.image = "";
      return;
    }
    training.hidden = true;
    scaleBar.hidden = false;
    body.dataset.training = "0";
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
        image: state.current.image, position: state.current.position, score: score,
        viewing: viewer.viewing() });
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

  // A key that does nothing says so (a rater pressing 5 on a 0-4 scale must not think it counted).
  let flashTimer = null;
  function refuse(text) {
    message.textContent = text;
    body.dataset.refused = String(Number(body.dataset.refused || 0) + 1);
    scaleBar.classList.remove("flash");
    void scaleBar.offsetWidth;  // restart the CSS animation
    scaleBar.classList.add("flash");
    clearTimeout(flashTimer);
    flashTimer = setTimeout(function () { scaleBar.classList.remove("flash"); }, 800);
  }
  const SCALE_TEXT = "scores are " + scoreMin + "-" + scoreMax;
  const KEY_HELP = SCALE_TEXT + "; view: + - O F M, arrows; undo: Backspace";

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.altKey || event.metaKey) return;
    const key = event.key;
    if (trainingIndex >= 0) {
      if (key === "Enter" || key === " ") { event.preventDefault(); nextTraining(); return; }
    } else if (onBreak) {
      if (key === "Enter" || key === " ") { event.preventDefault(); endBreak(); return; }
      if (key.length === 1) refuse("Break: press Enter to continue.");
      return;
    }
    if (viewer.handleKey(event)) { event.preventDefault(); return; }
    if (trainingIndex >= 0) {
      if (key.length === 1) refuse("Training examples are not rated: press Enter for the next one.");
      return;
    }
    if (/^[0-9]$/.test(key)) {
      const score = Number(key);
      event.preventDefault();
      if (score >= scoreMin && score <= scoreMax) rate(score);
      else refuse("Key " + key + " is not on the scale: " + SCALE_TEXT + ".");
      return;
    }
    if (key === "Backspace" || key === "u" || key === "U") { event.preventDefault(); undo(); return; }
    if (key.length === 1 && key !== " ") refuse("Key " + key + " does nothing here: " + KEY_HELP + ".");
  });
  undoButton.addEventListener("click", undo);
  document.getElementById("training-next").addEventListener("click", nextTraining);
  document.getElementById("break-continue").addEventListener("click", endBreak);
  for (const button of document.querySelectorAll("button.score")) {
    button.addEventListener("click", function () { button.blur(); rate(Number(button.dataset.score)); });
  }
  // toolbar buttons lose focus after a click so Enter/Space keep their page meaning
  const VIEW_BUTTONS = { "zoom-in": viewer.zoomIn, "zoom-out": viewer.zoomOut,
    "zoom-one": viewer.oneToOne, "zoom-fit": viewer.fit, "magnifier": viewer.toggleMagnifier };
  for (const id of Object.keys(VIEW_BUTTONS)) {
    const button = document.getElementById(id);
    button.addEventListener("click", function () { button.blur(); VIEW_BUTTONS[id](); });
  }
  setReady(false);
  watchPixelRatio();
  load();
})();
