// What the page's scripts share: DOM helpers, numbers as a reader writes them, and the list of
// extra sections that app.js renders before it marks the page ready.

"use strict";

(function () {
  function byId(id) {
    return document.getElementById(id);
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  // As a reader writes a number: 1.1, not 1.1000000000000003.
  function fmt(v) {
    if (!Number.isFinite(v)) return "\u2013";
    const r = Math.round(v * 1e4) / 1e4;
    return String(r === 0 ? 0 : r);
  }

  function commas(n) {
    return typeof n === "bigint" ? n.toLocaleString("en-US") : Math.round(n).toLocaleString("en-US");
  }

  window.ONEBYONE_PAGE = { byId, el, fmt, commas, sections: [] };
})();
