// Image viewer of the rating page: zoom (1:1, integer steps, fit to screen), pan, magnifier.
//
// Zoom is counted in DEVICE pixels per image pixel, so 1 ("1:1") shows one image pixel on one
// screen pixel whatever devicePixelRatio the browser has (HiDPI screen, browser zoom). Steps
// above 1 are integers drawn with nearest-neighbour rendering: each image pixel becomes an
// exact k x k block, nothing is interpolated. Only "fit" can go below 1 on a small window; that
// view is resampled, so the page says so next to the zoom level and the rating's viewing log
// records it. The magnifier is a canvas drawn from the loaded image (no second download) with
// smoothing off at LENS_ZOOM device pixels per image pixel.
"use strict";
window.PetctiqaViewer = (function () {
  const STEPS = [1, 2, 3, 4, 6, 8, 12, 16];
  const LENS_ZOOM = 4;
  const LENS_CSS_PX = 200;
  const PAN_FRACTION = 0.2;
  const LENS_STEP_PX = 8;

  function ratio() { return window.devicePixelRatio || 1; }
  function round4(x) { return Math.round(x * 10000) / 10000; }

  function create(parts) {
    const img = parts.img;
    const viewport = parts.viewport;
    const lens = parts.lens;
    const label = parts.label;
    const lensButton = parts.lensButton;
    let mode = "one";     // "one", "step" or "fit"
    let zoom = 1;         // device pixels per image pixel
    let natural = [0, 0];
    let lensOn = false;
    let focus = null;     // [x, y] image pixel under the magnifier
    let log = null;

    function fitZoom() {
      if (!natural[0] || !natural[1]) return 1;
      const r = ratio();
      const pad = getComputedStyle(viewport);  // clientWidth/Height include the padding
      const width = viewport.clientWidth - parseFloat(pad.paddingLeft) - parseFloat(pad.paddingRight);
      const height = viewport.clientHeight - parseFloat(pad.paddingTop) - parseFloat(pad.paddingBottom);
      const fit = Math.min(width * r / natural[0], height * r / natural[1]);
      // at or above 1:1, fit only to a whole number of device pixels per image pixel
      return fit >= 1 ? Math.floor(fit) : fit;
    }

    function describe() {
      if (zoom === 1) return "1:1 - one image pixel per screen pixel";
      if (zoom > 1) return zoom + "x - each image pixel is " + zoom + "x" + zoom + " screen pixels";
      return "fit " + Math.round(zoom * 100) + "% - RESAMPLED (downscaled to fit): use 1:1 to judge";
    }

    function note(event) {
      if (!log) return;
      const z = round4(zoom);
      if (log.zooms[log.zooms.length - 1] !== z) log.zooms.push(z);
      if (zoom < 1) log.resampled = true;
      if (event === "pan") log.panned = true;
      if (lensOn) log.magnifier = true;
    }

    // Size the image for the current zoom; keep the image point at the viewport's centre fixed.
    function apply(keepCentre) {
      if (mode === "fit") zoom = fitZoom();
      const oldWidth = img.getBoundingClientRect().width;
      const cx = viewport.scrollLeft + viewport.clientWidth / 2 - img.offsetLeft;
      const cy = viewport.scrollTop + viewport.clientHeight / 2 - img.offsetTop;
      const r = ratio();
      img.style.width = natural[0] ? (natural[0] * zoom / r) + "px" : "";
      img.style.height = natural[1] ? (natural[1] * zoom / r) + "px" : "";
      img.classList.toggle("downscaled", zoom < 1);
      label.textContent = describe();
      label.classList.toggle("warn", zoom < 1);
      body().dataset.zoom = String(round4(zoom));
      if (keepCentre && oldWidth > 0) {
        const scale = img.getBoundingClientRect().width / oldWidth;
        viewport.scrollLeft = img.offsetLeft + cx * scale - viewport.clientWidth / 2;
        viewport.scrollTop = img.offsetTop + cy * scale - viewport.clientHeight / 2;
      }
      drawLens();
      note("zoom");
    }

    function body() { return document.body; }

    function setZoom(newMode, value) {
      mode = newMode;
      if (value !== undefined) zoom = value;
      apply(true);
    }

    function zoomIn() {
      const next = STEPS.find(function (s) { return s > zoom + 1e-9; });
      if (next !== undefined) setZoom("step", next);
    }
    function zoomOut() {
      const lower = STEPS.filter(function (s) { return s < zoom - 1e-9; });
      if (lower.length) setZoom(lower[lower.length - 1] === 1 ? "one" : "step", lower[lower.length - 1]);
      else if (fitZoom() < zoom) setZoom("fit");
    }
    function oneToOne() { setZoom("one", 1); }
    function fit() { setZoom("fit"); }

    function pan(dx, dy) {
      viewport.scrollLeft += dx * viewport.clientWidth * PAN_FRACTION;
      viewport.scrollTop += dy * viewport.clientHeight * PAN_FRACTION;
      note("pan");
    }

    // ------------------------------------------------------------ magnifier
    function drawLens() {
      lens.hidden = !lensOn || !natural[0] || img.hidden;
      body().dataset.magnifier = lensOn ? "1" : "0";
      if (lens.hidden) return;
      if (!focus) focus = [Math.floor(natural[0] / 2), Math.floor(natural[1] / 2)];
      const r = ratio();
      const device = Math.round(LENS_CSS_PX * r);
      if (lens.width !== device) { lens.width = device; lens.height = device; }
      lens.style.width = (device / r) + "px";
      lens.style.height = (device / r) + "px";
      const ctx = lens.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, device, device);
      const span = device / LENS_ZOOM;  // image pixels across the lens
      const sx = focus[0] - span / 2;
      const sy = focus[1] - span / 2;
      if (img.complete && img.naturalWidth) ctx.drawImage(img, sx, sy, span, span, 0, 0, device, device);
      // place the lens centred on the focus point, kept inside the window
      const box = img.getBoundingClientRect();
      const px = box.left + (focus[0] + 0.5) * box.width / natural[0];
      const py = box.top + (focus[1] + 0.5) * box.height / natural[1];
      const size = device / r;
      lens.style.left = Math.min(Math.max(px - size / 2, 0), window.innerWidth - size) + "px";
      lens.style.top = Math.min(Math.max(py - size / 2, 0), window.innerHeight - size) + "px";
    }

    function toggleMagnifier(on) {
      lensOn = on === undefined ? !lensOn : on;
      lensButton.setAttribute("aria-pressed", lensOn ? "true" : "false");
      drawLens();
      note("magnifier");
    }

    function moveFocus(dx, dy, big) {
      const step = big ? 4 * LENS_STEP_PX : LENS_STEP_PX;
      if (!focus) focus = [Math.floor(natural[0] / 2), Math.floor(natural[1] / 2)];
      focus = [Math.min(Math.max(focus[0] + dx * step, 0), natural[0] - 1),
               Math.min(Math.max(focus[1] + dy * step, 0), natural[1] - 1)];
      drawLens();
    }

    img.addEventListener("mousemove", function (event) {
      if (!lensOn || !natural[0]) return;
      const box = img.getBoundingClientRect();
      focus = [Math.floor((event.clientX - box.left) * natural[0] / box.width),
               Math.floor((event.clientY - box.top) * natural[1] / box.height)];
      drawLens();
    });

    // drag to pan
    let drag = null;
    viewport.addEventListener("mousedown", function (event) {
      if (event.button !== 0) return;
      drag = [event.clientX, event.clientY, viewport.scrollLeft, viewport.scrollTop];
      event.preventDefault();
    });
    window.addEventListener("mousemove", function (event) {
      if (!drag) return;
      viewport.scrollLeft = drag[2] - (event.clientX - drag[0]);
      viewport.scrollTop = drag[3] - (event.clientY - drag[1]);
    });
    window.addEventListener("mouseup", function () {
      if (drag && (viewport.scrollLeft !== drag[2] || viewport.scrollTop !== drag[3])) note("pan");
      drag = null;
    });
    viewport.addEventListener("scroll", function () { if (lensOn) drawLens(); });
    window.addEventListener("resize", function () { if (mode === "fit") apply(false); else drawLens(); });

    // ------------------------------------------------------------ keys and logging
    const KEYS = {
      "+": zoomIn, "=": zoomIn, "-": zoomOut, "_": zoomOut,
      "o": oneToOne, "O": oneToOne, "f": fit, "F": fit,
      "m": function () { toggleMagnifier(); }, "M": function () { toggleMagnifier(); },
    };
    const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

    // True when the key belongs to the viewer (the caller then ignores it).
    function handleKey(event) {
      if (KEYS[event.key]) { KEYS[event.key](); return true; }
      if (event.key === "Escape" && lensOn) { toggleMagnifier(false); return true; }
      const arrow = ARROWS[event.key];
      if (!arrow) return false;
      if (lensOn) moveFocus(arrow[0], arrow[1], event.shiftKey);
      else pan(arrow[0], arrow[1]);
      return true;
    }

    return {
      // before the image loads: reserve its size at the current zoom
      prepare: function (width, height) {
        natural = [width || 0, height || 0];
        focus = null;
        log = null;
        apply(false);
      },
      // the image is on screen: size it from its real pixels and start a new viewing log
      shown: function (trackViewing) {
        natural = [img.naturalWidth, img.naturalHeight];
        log = null;
        apply(false);
        log = trackViewing ? { started: performance.now(), zooms: [round4(zoom)],
          resampled: zoom < 1, magnifier: lensOn, panned: false } : null;
      },
      refresh: function () { apply(false); },
      // the viewing record sent with a rating (null before the image was shown)
      viewing: function () {
        if (!log) return null;
        return {
          view_ms: Math.round(performance.now() - log.started),
          zooms: log.zooms.slice(),
          final_zoom: round4(zoom),
          resampled: log.resampled,
          magnifier: log.magnifier,
          panned: log.panned,
          device_pixel_ratio: ratio(),
        };
      },
      handleKey: handleKey,
      zoomIn: zoomIn, zoomOut: zoomOut, oneToOne: oneToOne, fit: fit,
      toggleMagnifier: function () { toggleMagnifier(); },
    };
  }

  return { create: create };
})();
