// Inside a trained network: the learned 1x1 layers of a network, on a few held-out images.
//
// Everything shown comes from DATA.trained, written by `onebyone explain --run DIR` (or
// --model M --weights W): the inputs each 1x1 layer received, its K x C weights and bias, its
// outputs as onebyone.conv1x1 computed them (before the layer's activation), the singular values
// of the weights, the accuracy at rank r and the two-class question. The page only reads them;
// the one sum it does itself is the clicked pixel's, term by term, shown beside the library's value.

"use strict";

(function () {
  const PAGE = window.ONEBYONE_PAGE;
  const { byId, el } = PAGE;

  const SHOWN_TERMS = 8; // the largest terms listed one by one; the rest fold into one line

  // Four significant digits, no trailing zeros: 0.0001234, 12.35, -3.
  function num(v) {
    if (!Number.isFinite(v)) return "\u2013";
    if (v === 0) return "0";
    const t = Math.abs(v) >= 1e5 || Math.abs(v) < 1e-4 ? v.toExponential(3) : v.toPrecision(4);
    return t.includes("e") ? t.replace(/\.?0+e/, "e") : t.replace(/\.?0+$/, "");
  }

  function pct(v) {
    return `${(100 * v).toFixed(1)}%`;
  }

  // base64 float32 (little-endian) with its shape, as onebyone.explain writes arrays.
  function decode(entry) {
    const bin = atob(entry.b64);
    const view = new DataView(new ArrayBuffer(bin.length));
    for (let i = 0; i < bin.length; i++) view.setUint8(i, bin.charCodeAt(i));
    const data = new Float64Array(bin.length / 4);
    for (let i = 0; i < data.length; i++) data[i] = view.getFloat32(4 * i, true);
    return { shape: entry.shape, data };
  }

  function maxAbs(data) {
    let m = 0;
    for (const v of data) m = Math.max(m, Math.abs(v));
    return m;
  }

  // Blue for negative, white for zero, red for positive, by |v| / scale.
  function color(v, scale) {
    const t = scale > 0 ? Math.max(-1, Math.min(1, v / scale)) : 0;
    const far = t < 0 ? [33, 102, 172] : [178, 24, 43];
    const a = Math.abs(t);
    const c = far.map((f) => Math.round(255 + (f - 255) * a));
    return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
  }

  // One H x W map at `offset` of `data`, drawn at `cell` pixels per value.
  function drawMap(canvas, data, offset, H, W, cell, scale, mark) {
    canvas.width = W * cell;
    canvas.height = H * cell;
    const ctx = canvas.getContext("2d");
    for (let i = 0; i < H; i++) {
      for (let j = 0; j < W; j++) {
        ctx.fillStyle = color(data[offset + i * W + j], scale);
        ctx.fillRect(j * cell, i * cell, cell, cell);
      }
    }
    if (mark) {
      ctx.strokeStyle = "#111";
      ctx.lineWidth = Math.max(1, cell / 8);
      ctx.strokeRect(mark[1] * cell + 0.5, mark[0] * cell + 0.5, cell - 1, cell - 1);
    }
  }

  // The held-out image itself: grey for one channel, colour for three.
  function drawImage(canvas, image, cell) {
    const [C, H, W] = image.shape;
    canvas.width = W * cell;
    canvas.height = H * cell;
    const ctx = canvas.getContext("2d");
    const lo = Math.min(...image.data);
    const hi = Math.max(...image.data);
    const level = (v) => Math.round(255 * (hi > lo ? (v - lo) / (hi - lo) : 0));
    for (let i = 0; i < H; i++) {
      for (let j = 0; j < W; j++) {
        const at = (c) => image.data[(c * H + i) * W + j];
        const rgb = C === 3 ? [0, 1, 2].map((c) => level(at(c))) : [0, 0, 0].map(() => 255 - level(at(0)));
        ctx.fillStyle = `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
        ctx.fillRect(j * cell, i * cell, cell, cell);
      }
    }
  }

  function cellSize(H, W, target) {
    return Math.max(2, Math.min(24, Math.floor(target / Math.max(H, W))));
  }

  // ------------------------------------------------------------------ state

  const state = { T: null, image: 0, layer: 0, picked: null, cache: new Map() };

  function layerArrays(li) {
    const key = `${li}:${state.image}`;
    if (!state.cache.has(key)) {
      const L = state.T.layers[li];
      state.cache.set(key, {
        x: decode(L.inputs[state.image]),
        y: decode(L.outputs[state.image]),
        w: decode(L.weight),
        b: L.bias ? decode(L.bias) : null,
      });
    }
    return state.cache.get(key);
  }

  // ------------------------------------------------------------------ the clicked pixel

  function renderArith() {
    const box = byId("trained-arith");
    const L = state.T.layers[state.layer];
    const { x, y, w, b } = layerArrays(state.layer);
    const [C, H, W] = x.shape;
    const [K, Ho, Wo] = y.shape;
    const [k, i, j] = state.picked;
    const si = i * L.stride[0];
    const sj = j * L.stride[1];
    const perGroupK = K / L.groups;
    const perGroupC = C / L.groups;
    const g = Math.floor(k / perGroupK);
    const terms = [];
    for (let c = g * perGroupC; c < (g + 1) * perGroupC; c++) {
      const wv = w.data[k * C + c];
      const xv = x.data[(c * H + si) * W + sj];
      terms.push({ c, w: wv, x: xv, t: wv * xv });
    }
    const bias = b ? b.data[k] : 0;
    let sum = bias;
    let absTotal = 0;
    for (const t of terms) {
      sum += t.t;
      absTotal += Math.abs(t.t);
    }
    const library = y.data[(k * Ho + i) * Wo + j];
    terms.sort((p, q) => Math.abs(q.t) - Math.abs(p.t));
    const shown = terms.length <= SHOWN_TERMS + 1 ? terms : terms.slice(0, SHOWN_TERMS);
    const rest = terms.slice(shown.length);
    const share = (v) => (absTotal > 0 ? Math.abs(v) / absTotal : 0);

    box.replaceChildren();
    Object.assign(box.dataset, { k, i, j, sum, library, bias, terms: terms.length });
    const where = L.stride[0] > 1 || L.stride[1] > 1 ? ` (input pixel [${si}, ${sj}], stride ${L.stride.join(" x ")})` : "";
    box.append(
      el("p", {}, [
        el("strong", { text: `y[${k}, ${i}, ${j}] = b[${k}] + \u03a3 over c of w[${k}, c] \u00b7 x[c, ${si}, ${sj}]` }),
        `${where}: ${terms.length} terms, the largest first, each with its share of \u03a3 |w\u00b7x|.`,
      ]),
    );
    const rows = [
      el("tr", {}, ["", "w[k, c]", "x[c, i, j]", "w \u00b7 x", "share"].map((h) => el("th", { text: h }))),
    ];
    let shownShare = 0;
    for (const t of shown) {
      shownShare += share(t.t);
      const tr = el("tr", { className: "term" }, [
        el("td", { text: `c = ${t.c}` }),
        el("td", { text: num(t.w) }),
        el("td", { text: num(t.x) }),
        el("td", { text: num(t.t) }),
        el("td", { text: pct(share(t.t)) }),
      ]);
      Object.assign(tr.dataset, { c: t.c, w: t.w, x: t.x, term: t.t });
      rows.push(tr);
    }
    if (rest.length > 0) {
      const restSum = rest.reduce((s, t) => s + t.t, 0);
      const restShare = rest.reduce((s, t) => s + share(t.t), 0);
      const tr = el("tr", { className: "rest" }, [
        el("td", { text: `the other ${rest.length} channels` }),
        el("td", { text: "" }),
        el("td", { text: "" }),
        el("td", { text: num(restSum) }),
        el("td", { text: pct(restShare) }),
      ]);
      Object.assign(tr.dataset, { count: rest.length, sum: restSum });
      rows.push(tr);
    }
    rows.push(el("tr", { className: "bias" }, [el("td", { text: `bias b[${k}]` }), el("td"), el("td"),
      el("td", { text: L.has_bias ? num(bias) : "0 (no bias)" }), el("td")]));
    box.append(el("table", { className: "numbers terms" }, rows));
    const lines = [
      `The ${shown.length} largest terms carry ${pct(shownShare)} of \u03a3 |w\u00b7x|.`,
      `Sum, added here: ${num(sum)}. onebyone.conv1x1: ${num(library)} (difference ${Math.abs(sum - library).toExponential(1)}).`,
    ];
    if (L.activation) lines.push(`The layer's ${L.activation} then gives ${num(L.activation === "relu6" ? Math.min(6, Math.max(0, library)) : Math.max(0, library))}.`);
    if (L.before) lines.push(`Next the network applies ${L.before}.`);
    for (const line of lines) box.append(el("p", { text: line }));
  }

  // ------------------------------------------------------------------ one layer

  function mapGrid(container, arr, prefix, scale, options) {
    const [n, H, W] = arr.shape;
    const cell = cellSize(H, W, options.target);
    container.replaceChildren();
    for (let c = 0; c < n; c++) {
      const canvas = el("canvas", { id: `${prefix}-${c}`, "data-channel": c, "data-cell": cell });
      const mark = options.mark && options.mark[0] === c ? options.mark.slice(1) : null;
      drawMap(canvas, arr.data, c * H * W, H, W, cell, scale, mark);
      const box = el("figure", { className: mark ? "fmap picked" : "fmap" }, [canvas, el("figcaption", { text: `${options.label}${c}` })]);
      if (options.onPick) {
        canvas.classList.add("pick");
        canvas.addEventListener("click", (ev) => {
          const r = canvas.getBoundingClientRect();
          const pi = Math.min(H - 1, Math.max(0, Math.floor(((ev.clientY - r.top) / r.height) * H)));
          const pj = Math.min(W - 1, Math.max(0, Math.floor(((ev.clientX - r.left) / r.width) * W)));
          options.onPick(c, pi, pj);
        });
      }
      container.append(box);
    }
  }

  function renderWeight(L, w) {
    const [K, C] = w.shape;
    const canvas = byId("trained-weight");
    const cell = Math.max(2, Math.min(16, Math.floor(520 / Math.max(K, C))));
    const scale = maxAbs(w.data);
    drawMap(canvas, w.data, 0, K, C, cell, scale, null);
    const readout = byId("trained-weight-value");
    readout.textContent = `${K} x ${C}: row k is output channel k, column c is input channel c; |w| up to ${num(scale)}. Point at a cell to read it.`;
    canvas.onmousemove = (ev) => {
      const r = canvas.getBoundingClientRect();
      const k = Math.min(K - 1, Math.floor(((ev.clientY - r.top) / r.height) * K));
      const c = Math.min(C - 1, Math.floor(((ev.clientX - r.left) / r.width) * C));
      readout.textContent = `w[${k}, ${c}] = ${num(w.data[k * C + c])}`;
    };
  }

  function renderSpectrum(L) {
    const s = L.singular_values;
    const canvas = byId("trained-spectrum");
    const barW = Math.max(2, Math.min(12, Math.floor(520 / s.length)));
    canvas.width = s.length * barW;
    canvas.height = 120;
    const ctx = canvas.getContext("2d");
    const top = s[0] || 1;
    for (let r = 0; r < s.length; r++) {
      ctx.fillStyle = r < L.rank_90 ? "#2f6fb3" : r < L.rank_99 ? "#8fb4dc" : "#c9d3df";
      const h = Math.max(1, (s[r] / top) * 116);
      ctx.fillRect(r * barW, 120 - h, Math.max(1, barW - 1), h);
    }
    byId("trained-spectrum-text").textContent =
      `Singular values of the ${L.out_channels} x ${L.in_channels} weights, largest first: rank ${L.rank_90} keeps 90% of their energy (dark), ` +
      `rank ${L.rank_99} keeps 99% (light), of ${L.full_rank}. A rank-r layer is two 1x1 layers, C \u2192 r \u2192 K: ` +
      `r (C + K) weights instead of C K.`;
    byId("trained-compress").textContent =
      state.T.compress_command || "onebyone compress RUN_DIR --rank energy:0.9 --out smaller";
    const rows = [el("tr", {}, ["rank r", "weights of C \u2192 r \u2192 K / C K", "held-out accuracy"].map((h) => el("th", { text: h })))];
    for (const row of L.rank_accuracy) {
      const tr = el("tr", {}, [
        el("td", { text: row.rank === L.full_rank ? `${row.rank} (full)` : String(row.rank) }),
        el("td", { text: pct(row.params_fraction) }),
        el("td", { text: pct(row.accuracy) }),
      ]);
      tr.dataset.rank = row.rank;
      tr.dataset.accuracy = row.accuracy;
      rows.push(tr);
    }
    byId("trained-ranks").replaceChildren(...rows);
  }

  function renderPair(L) {
    const box = byId("trained-pair");
    box.replaceChildren();
    const s = L.separation;
    if (!s) {
      box.append(el("p", { className: "note", text: "The held-out data has no classes named 2 and 3 to compare." }));
      return;
    }
    const [a, b] = s.classes;
    box.append(
      el("p", {
        text:
          `Over ${s.images[0]} held-out ${a}s and ${s.images[1]} ${b}s, output channel ${s.channel} of this layer tells them apart best: ` +
          `its mean over the map is ${num(s.mean[0])} for ${a} and ${num(s.mean[1])} for ${b}, ${num(s.dprime)} spreads apart (d\u2032). ` +
          `That difference, ${num(s.difference)}, is \u03a3 over c of w[${s.channel}, c] \u00b7 (mean x[c] over ${a}s \u2212 over ${b}s); ` +
          `the input channels that carry most of it:`,
      }),
    );
    const rows = [el("tr", {}, ["input channel", `w[${s.channel}, c]`, `mean x[c]: ${a} \u2212 ${b}`, "contribution", "share"].map((h) => el("th", { text: h })))];
    for (const t of s.inputs) {
      rows.push(el("tr", {}, [String(t.channel), num(t.weight), num(t.input_difference), num(t.contribution), pct(t.share)].map((v) => el("td", { text: v }))));
    }
    box.append(el("table", { className: "numbers" }, rows));
    const show = el("button", { type: "button", id: "trained-show-pair", text: `show output channel ${s.channel}` });
    show.addEventListener("click", () => {
      const y = layerArrays(state.layer).y;
      state.picked = [s.channel, Math.floor(y.shape[1] / 2), Math.floor(y.shape[2] / 2)];
      renderLayer();
    });
    box.append(el("p", {}, [show, ` Next best: ${s.next_best.map((n) => `channel ${n.channel} (d\u2032 ${num(n.dprime)})`).join(", ")}.`]));
  }

  function renderLayer() {
    const T = state.T;
    const L = T.layers[state.layer];
    const { x, y, w } = layerArrays(state.layer);
    if (!state.picked || state.picked[0] >= y.shape[0] || state.picked[1] >= y.shape[1] || state.picked[2] >= y.shape[2]) {
      state.picked = [0, 0, 0];
    }
    const place = [L.after && `after ${L.after}`, L.before && `before ${L.before}`].filter(Boolean).join(", ");
    const extra = [
      L.stride[0] > 1 || L.stride[1] > 1 ? `stride ${L.stride.join(" x ")}` : "",
      L.groups > 1 ? `${L.groups} groups (the weight matrix is block-diagonal)` : "",
      L.activation ? `${L.activation} fused` : "",
      L.has_bias ? "with bias" : "no bias",
    ].filter(Boolean).join(", ");
    byId("trained-layer-info").textContent =
      `${L.name} (${L.type}): ${L.input_size.join(" x ")} \u2192 ${L.output_size.join(" x ")}; ${place}; ${extra}. ` +
      `onebyone.conv1x1 on the captured input agrees with the float64 definition to ${L.check.max_abs_diff_reference.toExponential(1)} ` +
      `and with the layer's own output to ${L.check.max_abs_diff_layer_output.toExponential(1)}.`;
    byId("trained-in-title").textContent = `The ${x.shape[0]} input maps x[c] that reach it (${x.shape[1]} x ${x.shape[2]}, one colour scale, blue < 0 < red)`;
    byId("trained-out-title").textContent = `The ${y.shape[0]} output maps y[k] (before the layer's activation): click a pixel`;
    mapGrid(byId("trained-inputs"), x, "trained-in", maxAbs(x.data), { label: "x", target: 56 });
    mapGrid(byId("trained-outputs"), y, "trained-out", maxAbs(y.data), {
      label: "y",
      target: 72,
      mark: state.picked,
      onPick: (k, i, j) => {
        state.picked = [k, i, j];
        renderLayer();
      },
    });
    renderWeight(L, w);
    renderArith();
    renderSpectrum(L);
    renderPair(L);
  }

  function renderImage() {
    const im = state.T.images[state.image];
    const pixels = decode(im.pixels);
    drawImage(byId("trained-picture"), pixels, cellSize(pixels.shape[1], pixels.shape[2], 96));
    const ok = im.label === im.prediction;
    byId("trained-image-info").textContent =
      `held-out image ${im.index}: label ${im.label_name}, the network predicts ${im.prediction_name}${ok ? "" : " (wrong)"}.`;
  }

  // ------------------------------------------------------------------ the section

  function render(DATA) {
    const T = DATA.trained;
    if (!T) return;
    state.T = T;
    byId("trained-absent").hidden = true;
    byId("trained-body").hidden = false;
    byId("trained-summary").textContent =
      `${T.model} on ${T.data}: ${pct(T.accuracy)} held-out accuracy on the first ${T.eval_images} of ${T.test_images} held-out images; ` +
      `${T.layers.length} 1x1 layers. Pick an image and a layer.`;
    const imageSel = byId("trained-image");
    imageSel.replaceChildren(
      ...T.images.map((im, n) => el("option", { value: n, text: `#${im.index}: a ${im.label_name}, predicted ${im.prediction_name}` })),
    );
    const layerSel = byId("trained-layer");
    layerSel.replaceChildren(
      ...T.layers.map((L, n) => el("option", { value: n, text: `${L.name}: ${L.in_channels} \u2192 ${L.out_channels}` })),
    );
    imageSel.addEventListener("change", () => {
      state.image = Number(imageSel.value);
      renderImage();
      renderLayer();
    });
    layerSel.addEventListener("change", () => {
      state.layer = Number(layerSel.value);
      state.picked = null;
      renderLayer();
    });
    renderImage();
    renderLayer();
  }

  PAGE.sections.push(render);
})();
