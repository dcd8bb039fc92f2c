// The interactive page: the seed's examples, recomputed in the browser as you edit them.
//
// The library's numbers arrive in data.js (window.ONEBYONE_DATA, written by
// `onebyone explain --html DIR`); everything editable is recomputed here with the same
// formula as onebyone.reference: Y[k][i][j] = b[k] + sum over c of w[k][c] * X[c][i][j],
// summed in channel order. Inputs are kept as the text the reader typed, so a bad value
// stays visible, gets a message, and never becomes NaN on the page.

"use strict";

(function () {
  const DATA = window.ONEBYONE_DATA;
  const PAGE = window.ONEBYONE_PAGE;
  const { byId, el, fmt, commas } = PAGE;

  // Caps that keep the page responsive and the numbers finite; each has its own message.
  const LIMITS = {
    maxChannels: 8,
    maxSide: 12,
    maxFilters: 8,
    maxAbs: 1e9,
    maxCostSize: 100000,
  };
  const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
  const WHOLE = /^\+?\d+$/;

  // ------------------------------------------------------------------ helpers

  // A number the reader typed: {value} or {error} naming the field and what was expected.
  function parseNumber(text, label) {
    const t = String(text).trim();
    if (t === "") return { error: `${label} is empty: enter a number` };
    if (!NUMBER.test(t)) return { error: `${label} is not a number: "${t}"` };
    const v = Number(t);
    if (!Number.isFinite(v) || Math.abs(v) > LIMITS.maxAbs) {
      return { error: `${label} = ${t} is too large: at most 1e9 in size` };
    }
    return { value: v };
  }

  function parseWhole(text, label, min, max) {
    const t = String(text).trim();
    if (t === "") return { error: `${label} is empty: enter a whole number from ${min} to ${max}` };
    if (!WHOLE.test(t)) return { error: `${label} must be a whole number from ${min} to ${max}, got "${t}"` };
    const v = Number(t);
    if (v < min) return { error: `${label} = ${t} is too small: at least ${min}` };
    if (v > max) return { error: `${label} = ${t} is too large: at most ${max}` };
    return { value: v };
  }

  function showErrors(box, errors) {
    box.hidden = errors.length === 0;
    const shown = errors.slice(0, 4).join("; ");
    box.textContent = errors.length > 4 ? `${shown}; and ${errors.length - 4} more` : shown;
  }

  function markBad(input, bad) {
    input.classList.toggle("bad", bad);
    if (bad) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  // A pale blue-to-amber tint for a value within [lo, hi].
  function tint(v, lo, hi) {
    if (!(hi > lo)) return "#f3f6fa";
    const t = (v - lo) / (hi - lo);
    const from = [232, 240, 251];
    const to = [253, 216, 150];
    const c = from.map((f, i) => Math.round(f + (to[i] - f) * t));
    return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
  }

  function matrixTable(values, idPrefix, options) {
    const opts = options || {};
    const flat = values.flat();
    const lo = Math.min(...flat);
    const hi = Math.max(...flat);
    const rows = values.map((row, i) =>
      el(
        "tr",
        {},
        row.map((v, j) => {
          const td = el("td", { className: "out", text: fmt(v) });
          if (idPrefix) td.id = `${idPrefix}-${i}-${j}`;
          td.dataset.value = String(v);
          if (opts.tint !== false) td.style.background = tint(v, lo, hi);
          return td;
        }),
      ),
    );
    return el("table", { className: "grid" }, rows);
  }

  function mapBlock(title, table) {
    return el("div", { className: "map" }, [el("div", { className: "map-title", text: title }), table]);
  }

  function bytes(n) {
    const v = Number(n);
    const units = [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]];
    for (const [unit, size] of units) {
      if (v >= size) return `${(v / size).toFixed(2)} ${unit} (${commas(n)} B)`;
    }
    return `${commas(n)} B`;
  }

  function seconds(s) {
    if (!Number.isFinite(s)) return "\u2013";
    if (s >= 1) return `${s.toFixed(2)} s`;
    if (s >= 1e-3) return `${(s * 1e3).toFixed(2)} ms`;
    return `${(s * 1e6).toFixed(1)} \u00b5s`;
  }

  // ------------------------------------------------------------------ 1. math view

  const math = { C: 3, H: 6, W: 6, x: [], w: [], b: [], sizeText: {}, picked: [0, 0, 0] };

  function resetMath() {
    const maps = DATA.math.inputs.maps;
    math.C = maps.length;
    math.H = maps[0].length;
    math.W = maps[0][0].length;
    math.x = maps.map((m) => m.map((r) => r.map((v) => String(v))));
    math.w = [DATA.math.inputs.kernel.map((v) => String(v))];
    math.b = ["0"];
    math.sizeText = { C: String(math.C), H: String(math.H), W: String(math.W) };
    math.picked = [0, 0, 0];
    buildMath();
  }

  function resizeMath(C, H, W) {
    const pad = (arr, n, make) => Array.from({ length: n }, (_, i) => (i < arr.length ? arr[i] : make(i)));
    math.x = pad(math.x, C, () => []).map((m) =>
      pad(m, H, () => []).map((r) => pad(r, W, () => "0")),
    );
    // a new channel gets weight 0 in every filter: the outputs do not change until you say so
    math.w = math.w.map((row) => pad(row, C, () => "0"));
    math.C = C;
    math.H = H;
    math.W = W;
    const [k, i, j] = math.picked;
    math.picked = [Math.min(k, math.w.length - 1), Math.min(i, H - 1), Math.min(j, W - 1)];
    buildMath();
  }

  function sizeErrors() {
    const errors = [];
    const parsed = {};
    const caps = { C: LIMITS.maxChannels, H: LIMITS.maxSide, W: LIMITS.maxSide };
    const names = { C: "maps C", H: "height H", W: "width W" };
    for (const key of ["C", "H", "W"]) {
      const r = parseWhole(math.sizeText[key], names[key], 1, caps[key]);
      markBad(byId(`math-${key.toLowerCase()}`), Boolean(r.error));
      if (r.error) errors.push(r.error);
      else parsed[key] = r.value;
    }
    return { errors, parsed };
  }

  function buildMath() {
    for (const key of ["C", "H", "W"]) byId(`math-${key.toLowerCase()}`).value = math.sizeText[key];
    const maps = byId("math-maps");
    maps.replaceChildren();
    for (let c = 0; c < math.C; c++) {
      const rows = [];
      for (let i = 0; i < math.H; i++) {
        const cells = [];
        for (let j = 0; j < math.W; j++) {
          const input = el("input", {
            id: `x-${c}-${i}-${j}`,
            "data-role": "x",
            "data-c": c,
            "data-i": i,
            "data-j": j,
            "aria-label": `X${c}[${i},${j}]`,
          });
          input.value = math.x[c][i][j];
          cells.push(el("td", {}, [input]));
        }
        rows.push(el("tr", {}, cells));
      }
      maps.append(mapBlock(`X${c}`, el("table", { className: "grid" }, rows)));
    }

    const table = byId("math-filters");
    table.replaceChildren();
    const head = [el("th", { text: "" })];
    for (let c = 0; c < math.C; c++) head.push(el("th", { text: `w[k,${c}]` }));
    head.push(el("th", { text: "bias" }), el("th", { text: "" }));
    table.append(el("tr", {}, head));
    math.w.forEach((row, k) => {
      const cells = [el("th", { text: `filter ${k}` })];
      row.forEach((text, c) => {
        const input = el("input", { id: `w-${k}-${c}`, "data-role": "w", "data-k": k, "data-c": c });
        input.value = text;
        cells.push(el("td", {}, [input]));
      });
      const bias = el("input", { id: `b-${k}`, "data-role": "b", "data-k": k });
      bias.value = math.b[k];
      cells.push(el("td", {}, [bias]));
      const remove = el("button", {
        type: "button",
        id: `remove-filter-${k}`,
        className: "remove",
        "data-k": k,
        title: `remove filter ${k}`,
        text: "\u00d7",
      });
      cells.push(el("td", {}, [remove]));
      table.append(el("tr", { "data-filter": k }, cells));
    });
    computeMath();
  }

  function computeMath(extraErrors) {
    const errors = [...(extraErrors || []), ...sizeErrors().errors];
    const x = [];
    let valuesOk = true;
    for (let c = 0; c < math.C; c++) {
      x.push([]);
      for (let i = 0; i < math.H; i++) {
        x[c].push([]);
        for (let j = 0; j < math.W; j++) {
          const r = parseNumber(math.x[c][i][j], `X${c}[${i},${j}]`);
          markBad(byId(`x-${c}-${i}-${j}`), Boolean(r.error));
          if (r.error) {
            errors.push(r.error);
            valuesOk = false;
          }
          x[c][i].push(r.value);
        }
      }
    }
    const w = math.w.map((row, k) =>
      row.map((text, c) => {
        const r = parseNumber(text, `weight w[${k},${c}]`);
        markBad(byId(`w-${k}-${c}`), Boolean(r.error));
        if (r.error) {
          errors.push(r.error);
          valuesOk = false;
        }
        return r.value;
      }),
    );
    const b = math.b.map((text, k) => {
      const r = parseNumber(text, `bias of filter ${k}`);
      markBad(byId(`b-${k}`), Boolean(r.error));
      if (r.error) {
        errors.push(r.error);
        valuesOk = false;
      }
      return r.value;
    });

    const K = math.w.length;
    byId("math-shape").textContent =
      `${math.C}x${math.H}x${math.W} \u2192 ${K} filter${K > 1 ? "s" : ""} of ${math.C}x1x1 \u2192 ${K}x${math.H}x${math.W}`;
    const outputs = byId("math-outputs");
    outputs.replaceChildren();
    const arith = byId("math-arith");
    if (!valuesOk) {
      // show the shapes, not stale or made-up numbers
      for (let k = 0; k < K; k++) {
        const rows = Array.from({ length: math.H }, (_, i) =>
          el(
            "tr",
            {},
            Array.from({ length: math.W }, (_, j) =>
              el("td", { id: `y-${k}-${i}-${j}`, className: "out stale", text: "\u2013", "data-value": "" }),
            ),
          ),
        );
        outputs.append(mapBlock(`Y${k}`, el("table", { className: "grid" }, rows)));
      }
      arith.textContent = "Fix the marked values to see the outputs.";
      showErrors(byId("math-msg"), errors);
      return;
    }

    const y = [];
    for (let k = 0; k < K; k++) {
      y.push([]);
      for (let i = 0; i < math.H; i++) {
        y[k].push([]);
        for (let j = 0; j < math.W; j++) {
          let total = b[k];
          for (let c = 0; c < math.C; c++) total += w[k][c] * x[c][i][j];
          y[k][i].push(total);
        }
      }
    }
    y.forEach((map, k) => {
      const table = matrixTable(map, `y-${k}`);
      table.dataset.k = k;
      outputs.append(mapBlock(k === 0 ? "Y0 (the seed's T)" : `Y${k}`, table));
    });
    const [pk, pi, pj] = math.picked;
    const picked = byId(`y-${pk}-${pi}-${pj}`);
    if (picked) picked.classList.add("picked");

    const line = (k, i, j) => {
      const terms = [];
      for (let c = 0; c < math.C; c++) terms.push(`${fmt(x[c][i][j])}*${fmt(w[k][c])}`);
      const bias = b[k] !== 0 ? ` + ${fmt(b[k])}` : "";
      return `Y${k}[${i},${j}] = ${terms.join(" + ")}${bias} = ${fmt(y[k][i][j])}`;
    };
    const lines = [];
    if (math.H > 0 && math.W > 0) lines.push(line(0, 0, 0));
    if (math.H > 1) lines.push(line(0, 1, 0));
    lines.push(`clicked: ${line(pk, pi, pj)}`);
    arith.textContent = lines.join("\n");
    showErrors(byId("math-msg"), errors);
  }

  function wireMath() {
    const section = byId("math");
    section.addEventListener("input", (event) => {
      const t = event.target;
      const role = t.dataset.role;
      if (role === "x") math.x[t.dataset.c][t.dataset.i][t.dataset.j] = t.value;
      else if (role === "w") math.w[t.dataset.k][t.dataset.c] = t.value;
      else if (role === "b") math.b[t.dataset.k] = t.value;
      else if (role === "size") {
        math.sizeText[t.dataset.size] = t.value;
        const { errors, parsed } = sizeErrors();
        if (errors.length === 0 && (parsed.C !== math.C || parsed.H !== math.H || parsed.W !== math.W)) {
          resizeMath(parsed.C, parsed.H, parsed.W);
          byId(t.id).focus();
          return;
        }
      } else return;
      computeMath();
    });
    section.addEventListener("click", (event) => {
      const t = event.target;
      if (t.id === "math-reset") resetMath();
      else if (t.id === "add-filter") {
        if (math.w.length >= LIMITS.maxFilters) {
          computeMath([`at most ${LIMITS.maxFilters} filters on this page`]);
          return;
        }
        // a new filter copies one map (weight 1 on it, 0 elsewhere): edit it from there
        const copy = math.w.length % math.C;
        math.w.push(Array.from({ length: math.C }, (_, c) => (c === copy ? "1" : "0")));
        math.b.push("0");
        buildMath();
      } else if (t.classList.contains("remove")) {
        if (math.w.length <= 1) {
          computeMath(["a convolution needs at least one filter"]);
          return;
        }
        const k = Number(t.dataset.k);
        math.w.splice(k, 1);
        math.b.splice(k, 1);
        math.picked = [Math.min(math.picked[0], math.w.length - 1), math.picked[1], math.picked[2]];
        buildMath();
      } else if (t.tagName === "TD" && t.id.startsWith("y-") && !t.classList.contains("stale")) {
        math.picked = t.id.slice(2).split("-").map(Number);
        computeMath();
      }
    });
  }

  // ------------------------------------------------------------------ 2. digits

  const digits = { a: "", b: "", w1: "", w2: "", bias: "", row: "", col: "", thr: "" };
  const DIGIT_FIELDS = {
    a: "digit-a",
    b: "digit-b",
    w1: "digit-w1",
    w2: "digit-w2",
    bias: "digit-bias",
    row: "readout-row",
    col: "readout-col",
    thr: "readout-threshold",
  };

  function setDigitFields(values) {
    Object.assign(digits, values);
    for (const [field, id] of Object.entries(DIGIT_FIELDS)) byId(id).value = digits[field];
    computeDigits();
  }

  function resetDigits() {
    const d = DATA.digits;
    setDigitFields({
      a: String(d.inputs.a),
      b: String(d.inputs.b),
      w1: String(d.inputs.weights[0]),
      w2: String(d.inputs.weights[1]),
      bias: "0",
      row: String(d.readout.pixel[0]),
      col: String(d.readout.pixel[1]),
      thr: String(d.readout.threshold),
    });
  }

  function computeDigits() {
    const errors = [];
    const v = {};
    const labels = { a: "a", b: "b", w1: "w1", w2: "w2", bias: "bias", thr: "threshold" };
    for (const [field, label] of Object.entries(labels)) {
      const r = parseNumber(digits[field], label);
      markBad(byId(DIGIT_FIELDS[field]), Boolean(r.error));
      if (r.error) errors.push(r.error);
      v[field] = r.value;
    }
    const unit = DATA.digits.digits["2"].unit_maps;
    const rows = unit[0].length;
    const cols = unit[0][0].length;
    for (const [field, label, max] of [["row", "readout row", rows - 1], ["col", "readout column", cols - 1]]) {
      const r = parseWhole(digits[field], label, 0, max);
      markBad(byId(DIGIT_FIELDS[field]), Boolean(r.error));
      if (r.error) errors.push(r.error);
      v[field] = r.value;
    }
    showErrors(byId("digit-msg"), errors);
    const ok = errors.length === 0;

    const panels = byId("digit-panels");
    panels.replaceChildren();
    const learned = DATA.digits.learned;
    for (const d of ["2", "3"]) {
      const u = DATA.digits.digits[d].unit_maps;
      const panel = el("div", { className: "digit-panel", id: `digit-panel-${d}` }, [el("h3", { text: `digit ${d}` })]);
      const row = el("div", { className: "maps" });
      if (!ok) {
        row.append(el("p", { className: "note", text: "Fix the marked values to see the maps and outputs." }));
        panel.append(row, el("p", { id: `verdict-${d}`, className: "verdict", text: "\u2013" }));
        panels.append(panel);
        continue;
      }
      const m1 = u[0].map((r) => r.map((s) => v.a * s));
      const m2 = u[1].map((r) => r.map((s) => v.b * s));
      // the 1x1 convolution of the two maps: bias + w1 * map1 + w2 * map2 at every pixel
      const y = m1.map((r, i) => r.map((s, j) => v.bias + v.w1 * s + v.w2 * m2[i][j]));
      row.append(
        mapBlock("map 1 (a)", matrixTable(m1, `d${d}-m1`)),
        mapBlock("map 2 (b)", matrixTable(m2, `d${d}-m2`)),
        mapBlock(`${fmt(v.w1)}\u00b7map1 + ${fmt(v.w2)}\u00b7map2 + ${fmt(v.bias)}`, matrixTable(y, `d${d}-y`)),
      );
      const picked = row.querySelector(`#d${d}-y-${v.row}-${v.col}`);
      if (picked) picked.classList.add("picked");
      const pixel = y[v.row][v.col];
      const reads = pixel > v.thr ? 2 : 3;
      let score = learned.readout_bias;
      y.forEach((r, i) => r.forEach((s, j) => (score += learned.readout[i][j] * s)));
      const clamped = Math.max(-700, Math.min(700, score));
      const p = 1 / (1 + Math.exp(-clamped));
      panel.append(
        row,
        el("p", {}, [
          `output[${v.row},${v.col}] = ${fmt(pixel)} ${pixel > v.thr ? ">" : "\u2264"} ${fmt(v.thr)}: `,
          el("span", {
            id: `verdict-${d}`,
            className: `verdict ${reads === 2 ? "two" : "three"}`,
            "data-reads-as": reads,
            text: `reads as ${reads}`,
          }),
        ]),
        el("p", { className: "note" }, [
          "learned readout on this output: P(digit 2) = ",
          el("span", { id: `learned-p-${d}`, "data-value": String(p), text: p.toFixed(3) }),
        ]),
      );
      panels.append(panel);
    }
  }

  function wireDigits() {
    const d = DATA.digits;
    const learned = d.learned;
    const ex = learned.examples;
    byId("digit-learned-note").textContent =
      `Learned by the library: a Conv1x1(2 \u2192 1) and a linear readout of its 5x3 output, ` +
      `${ex.steps} Adam steps on ${ex.train} noisy drawings (seed ${ex.seed}): weights ` +
      `${learned.weight.map((x) => fmt(x)).join(", ")}, bias ${fmt(learned.bias)}, test accuracy ` +
      `${(100 * learned.test_accuracy).toFixed(1)}%. The readout's strongest pixels: ` +
      learned.strongest_pixels.map((s) => `[${s.pixel[0]},${s.pixel[1]}] ${fmt(s.weight)}`).join(", ") +
      `. The hand rule (pixel [${d.readout.pixel}]) scores ${(100 * d.readout.test_accuracy).toFixed(1)}% on the same test drawings.`;
    const section = byId("digits");
    section.addEventListener("input", (event) => {
      const t = event.target;
      if (t.dataset.role !== "digit") return;
      digits[t.dataset.field] = t.value;
      computeDigits();
    });
    byId("digit-seed-weights").addEventListener("click", () =>
      setDigitFields({ w1: String(d.inputs.weights[0]), w2: String(d.inputs.weights[1]), bias: "0" }),
    );
    byId("digit-learned-weights").addEventListener("click", () => {
      // the readout pixel holds bias + w2 * b for a 2 and bias for a 3: put the threshold halfway
      const typed = parseNumber(digits.b, "b");
      const b = typed.error ? d.inputs.b : typed.value;
      setDigitFields({
        w1: String(learned.weight[0]),
        w2: String(learned.weight[1]),
        bias: String(learned.bias),
        thr: String(learned.bias + (learned.weight[1] * b) / 2),
      });
    });
  }

  // ------------------------------------------------------------------ 3. advanced view

  function renderAdvanced() {
    const a = DATA.advanced;
    const body = byId("advanced-body");
    const [C, H, W] = a.input_shape;
    const K = a.output_shape[0];
    body.append(
      el("p", {
        text:
          `${K} filters, each ${C} weights (one per input map) and a bias: ${a.params} parameters turn ` +
          `${C}x${H}x${W} into ${K}x${H}x${W}, at ${commas(a.macs)} multiply-adds. Each output pixel mixes the ` +
          `${C} values at the same pixel; the ${H}x${W} layout is untouched.`,
      }),
      el("p", { className: "note" }, [
        "Computed by onebyone.conv1x1; largest difference from the float64 definition ",
        el("code", { id: "advanced-diff", text: a.max_abs_diff_vs_reference.toExponential(1) }),
        ", from F.conv2d ",
        el("code", { text: a.max_abs_diff_vs_conv2d.toExponential(1) }),
        ". The weights (rows: filters, columns: input maps):",
      ]),
      matrixTable(a.inputs.weight, "advanced-w"),
    );
  }

  // ------------------------------------------------------------------ 4. cost of the reduction

  const cost = { C: "", H: "", W: "", K: "" };

  function resetCost() {
    const s = DATA.reduction.inputs;
    Object.assign(cost, { C: String(s.channels), H: String(s.height), W: String(s.width), K: String(s.filters) });
    for (const key of ["C", "H", "W", "K"]) byId(`cost-${key.toLowerCase()}`).value = cost[key];
    computeCost();
  }

  function computeCost() {
    const errors = [];
    const v = {};
    for (const key of ["C", "H", "W", "K"]) {
      const r = parseWhole(cost[key], key, 1, LIMITS.maxCostSize);
      markBad(byId(`cost-${key.toLowerCase()}`), Boolean(r.error));
      if (r.error) errors.push(r.error);
      v[key] = r.value;
    }
    showErrors(byId("cost-msg"), errors);
    const ids = [
      "cost-params", "cost-params-bias", "cost-macs", "cost-flops",
      "cost-bytes-in", "cost-bytes-out", "cost-bytes-w", "cost-intensity", "cost-roofline",
    ];
    if (errors.length) {
      for (const id of ids) {
        byId(id).textContent = "\u2013";
        byId(id).dataset.value = "";
      }
      return;
    }
    // counts as BigInt: 100000^4 multiply-adds is beyond a double's exact integers
    const [C, H, W, K] = ["C", "H", "W", "K"].map((key) => BigInt(v[key]));
    const params = K * C;
    const macs = K * C * H * W;
    const flops = 2n * macs;
    const inBytes = 4n * C * H * W;
    const outBytes = 4n * K * H * W;
    const wBytes = 4n * K * C;
    const moved = Number(inBytes + outBytes + wBytes);
    const set = (id, value, text) => {
      byId(id).dataset.value = String(value);
      byId(id).textContent = text;
    };
    set("cost-params", params, commas(params));
    set("cost-params-bias", params + K, commas(params + K));
    set("cost-macs", macs, commas(macs));
    set("cost-flops", flops, commas(flops));
    set("cost-bytes-in", inBytes, bytes(inBytes));
    set("cost-bytes-out", outBytes, bytes(outBytes));
    set("cost-bytes-w", wBytes, bytes(wBytes));
    const intensity = Number(flops) / moved;
    set("cost-intensity", intensity, intensity.toFixed(2));
    const t = DATA.reduction.timing;
    if (t) {
      const roof = Math.max(Number(flops) / (t.gemm_gflops * 1e9), moved / (t.bandwidth_gbs * 1e9));
      set("cost-roofline", roof, `${seconds(roof)} (GEMM ${t.gemm_gflops} GFLOP/s, memory ${t.bandwidth_gbs} GB/s)`);
    } else {
      set("cost-roofline", "", "not measured (the page was written with --no-timing)");
    }
  }

  function wireCost() {
    const r = DATA.reduction;
    const t = r.timing;
    const s = r.inputs;
    byId("cost-measured").textContent = t
      ? `Measured when the page was written, for ${s.channels}x${s.height}x${s.width} \u2192 ${s.filters} ` +
        `(float32, batch 1, ${t.statistic}, ${t.threads} threads, ${t.machine}): onebyone.conv1x1 ` +
        `${seconds(t.conv1x1_s)} (${t.conv1x1_gflops.toFixed(1)} GFLOP/s, ${(100 * t.roofline_fraction).toFixed(0)}% ` +
        `of the roofline), F.conv2d ${seconds(t.conv2d_s)}.`
      : "No time was measured when this page was written (--no-timing).";
    byId("cost").addEventListener("input", (event) => {
      const target = event.target;
      if (target.dataset.role !== "cost") return;
      cost[target.dataset.field] = target.value;
      computeCost();
    });
    byId("cost-reset").addEventListener("click", resetCost);
  }

  // ------------------------------------------------------------------ 5. depth

  function renderDepth() {
    const d = DATA.depth;
    const body = byId("depth-body");
    const last = d.more_filters[d.more_filters.length - 1];
    const maps = el("div", { className: "maps" });
    last.output.forEach((m, k) =>
      maps.append(mapBlock(`filter ${k}: ${last.filters[k].map(fmt).join(", ")}`, matrixTable(m, `depth-${k}`))),
    );
    body.append(
      el("p", {
        text:
          "Each 1x1 filter makes one output map, so adding filters adds maps (depth) without changing the ones " +
          `already there: 1, 2, 3 filters on the seed's maps give ` +
          d.more_filters.map((g) => g.output_shape.join("x")).join(", ") +
          ` (the first map moves by ${d.first_map_max_change.toExponential(1)}).`,
      }),
      maps,
      el("p", {}, [
        `Stacked 1x1 \u2192 ReLU \u2192 1x1 \u2192 ReLU \u2192 1x1 (widths ${d.mlp.widths.join(" \u2192 ")}) is an MLP ` +
          "applied at every pixel (Network in Network's \u201ccascaded cross channel parametric pooling\u201d): " +
          "against nn.Linear layers with the same weights run pixel by pixel, the largest difference is ",
        el("code", { id: "depth-mlp-diff", text: d.mlp.max_abs_diff_vs_linear_per_pixel.toExponential(1) }),
        ". A single 1x1 convolution against nn.Linear(3, 1) at every pixel: ",
        el("code", { id: "depth-linear-diff", text: d.linear.max_abs_diff.toExponential(1) }),
        ".",
      ]),
    );
  }

  // ------------------------------------------------------------------ 6. inception

  function renderInception() {
    const inc = DATA.inception;
    const rows = [];
    const add = (name, params, macs, total) =>
      rows.push(
        el("tr", total ? { className: "total" } : {}, [
          el("th", { text: name }),
          el("td", { text: commas(params) }),
          el("td", { text: commas(macs) }),
        ]),
      );
    for (const l of inc.direct.layers) add(l.name, l.params, l.macs, false);
    add("total, direct", inc.direct.params, inc.direct.macs, true);
    for (const l of inc.reduced.layers) add(l.name, l.params, l.macs, false);
    add("total, with the 1x1 reduction", inc.reduced.params, inc.reduced.macs, true);
    const table = el("table", { className: "numbers wide", id: "inception-table" }, [
      el("thead", {}, [el("tr", {}, [el("th", { text: "layer" }), el("th", { text: "parameters" }), el("th", { text: "MACs" })])]),
      el("tbody", {}, rows),
    ]);
    const s = inc.inputs;
    byId("inception-body").append(
      el("p", {
        text:
          `GoogLeNet's 5x5 branch: a ${s.kernel}x${s.kernel} convolution on ${s.size}x${s.size}x${s.channels} ` +
          `\u2192 ${s.out} maps ('same' padding), straight or after a 1x1 convolution down to ${s.reduce} maps. ` +
          "Weights only; bias not counted.",
      }),
      table,
      el("p", {}, [
        "The 1x1 reduction needs ",
        el("strong", { id: "inception-ratio", text: `${inc.macs_ratio.toFixed(2)}x` }),
        ` fewer multiply-adds and ${inc.params_ratio.toFixed(2)}x fewer parameters.`,
      ]),
    );
  }

  // ------------------------------------------------------------------ 7. the seed, checked

  // The computed side of a check, without the bulky details the explanation already spells out.
  function shortComputed(c) {
    if (c.claim === "digits.pixel") return { pixel_where_claim_holds: c.computed.pixel_where_claim_holds };
    if (c.claim.startsWith("digits.output")) return { matches_digit: c.computed.matches_digit };
    if (c.claim === "math.T") return { cell: c.computed.cell, value: Number(fmt(c.computed.value)) };
    return c.computed;
  }

  function renderSeed() {
    const dis = DATA.disagreements;
    byId("seed-summary").textContent =
      `Every printed claim of the seed was recomputed: ${DATA.checks.length} checks, ` +
      `${dis.length} disagreements. In each, the computed value is the right one.`;
    const list = byId("disagreements");
    for (const c of dis) {
      list.append(
        el("li", { "data-claim": c.claim }, [
          el("div", { className: "where", text: c.where }),
          el("div", { className: "quote", text: `\u201c${c.text}\u201d` }),
          el("div", { className: "values", text: `seed: ${JSON.stringify(c.seed)}` }),
          el("div", { className: "values", text: `computed: ${JSON.stringify(shortComputed(c))}` }),
          el("div", { className: "explanation", text: c.explanation }),
        ]),
      );
    }
  }

  // ------------------------------------------------------------------ start

  function start() {
    if (!DATA || !DATA.math || !DATA.digits) {
      const box = byId("load-msg");
      box.textContent =
        "The library's numbers (data.js) are missing: write the page with `onebyone explain --html DIR` and open DIR/index.html.";
      box.hidden = false;
      byId("app").hidden = true;
      return;
    }
    wireMath();
    wireDigits();
    wireCost();
    resetMath();
    resetDigits();
    resetCost();
    renderAdvanced();
    renderDepth();
    renderInception();
    renderSeed();
    for (const render of PAGE.sections) render(DATA);
    byId("footer").textContent = `Numbers computed by onebyone ${DATA.onebyone}; this page makes no network requests.`;
    document.body.dataset.ready = "true";
  }

  start();
})();
