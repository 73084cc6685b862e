// Confirmations (templates/portal/includes/confirmation.html). The "Yes, ..." button has
// `autofocus`, so it takes the focus when the confirmation appears (the browser on a page
// load, htmx after a swap) and Enter confirms. Escape, like Cancel, cancels.
(function () {
  "use strict";

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    var box = event.target.closest ? event.target.closest("[data-cancellable]") : null;
    if (!box && event.target === document.body) {
      var open = document.querySelectorAll("[data-cancellable]");
      if (open.length === 1) box = open[0];
    }
    var cancel = box && box.querySelector("[data-confirmation-cancel]");
    if (!cancel) return;
    event.preventDefault();
    cancel.click();
  });

  // Browsers skip `autofocus` on a page opened at a #fragment: focus the Yes button anyway.
  document.addEventListener("DOMContentLoaded", function () {
    var yes = document.querySelector("[data-confirmation] [autofocus]");
    if (yes && (document.activeElement === document.body || !document.activeElement)) yes.focus();
  });

  // A Cancel with nothing to fetch (the bulk completion's) removes the confirmation and
  // gives the focus back to the button that opened it.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-confirmation-dismiss]") : null;
    if (!button) return;
    var back = button.dataset.confirmationDismiss ? document.querySelector(button.dataset.confirmationDismiss) : null;
    button.closest("[data-cancellable]").remove();
    if (back) back.focus();
  });

  // A refused confirmation (no token, an expired or a mismatched one) answers 4xx with the
  // confirmation again, and input errors answer 400 with the input again; an action the user
  // may not take answers 403 with a sentence saying so (X-Refusal, portal/views/base.py): show
  // them in place.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    var shown = xhr.getResponseHeader("X-Confirmation") || xhr.getResponseHeader("X-Refusal");
    if (xhr.status >= 400 && xhr.status < 500 && shown) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
})();

// The withdrawal queue's selection (templates/portal/withdrawals.html): a checkbox in the Select
// column's header selects every open row on the page, and the line next to "Send selected payouts…"
// says what is selected: "Selected: 3 — KES 1,000.00 · NGN 4,500.00". The amounts are added as
// integers of minor units (BigInt), read from each box's data-amount string: no floating point
// touches money. Each currency's decimals come from the page (#ops-currency-decimals).
(function () {
  "use strict";
  var BOXES = 'input[name="ids"][form="bulk-form"]';

  function decimalsFor(currency) {
    var data = document.getElementById("ops-currency-decimals");
    var map = data ? JSON.parse(data.textContent || "{}") : {};
    return Object.prototype.hasOwnProperty.call(map, currency) ? map[currency] : 2;
  }

  // "1500.0000" at 2 decimals -> 150000n. Amounts are stored at their currency's precision, so
  // the digits cut off beyond it are zeros.
  function toMinor(text, decimals) {
    var parts = String(text).trim().split(".");
    var fraction = ((parts[1] || "") + "0".repeat(decimals)).slice(0, decimals);
    return BigInt(parts[0] || "0") * BigInt(10) ** BigInt(decimals) + BigInt(fraction || "0");
  }

  // 150000n, "NGN", 2 -> "NGN 1,500.00" (as finance.money.format_money writes it).
  function formatMinor(minor, currency, decimals) {
    var digits = minor.toString().padStart(decimals + 1, "0");
    var whole = decimals ? digits.slice(0, -decimals) : digits;
    var fraction = decimals ? "." + digits.slice(-decimals) : "";
    return currency + " " + whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + fraction;
  }

  function update() {
    var line = document.querySelector("[data-selected-total]");
    var boxes = Array.prototype.slice.call(document.querySelectorAll(BOXES));
    var checked = boxes.filter(function (box) { return box.checked; });
    var totals = {};
    checked.forEach(function (box) {
      var currency = box.dataset.currency;
      totals[currency] = (totals[currency] || BigInt(0)) + toMinor(box.dataset.amount, decimalsFor(currency));
    });
    if (line) {
      var parts = Object.keys(totals).sort().map(function (c) { return formatMinor(totals[c], c, decimalsFor(c)); });
      line.textContent = checked.length ? "Selected: " + checked.length + " — " + parts.join(" · ") : "Selected: none";
    }
    document.querySelectorAll("[data-select-all-box]").forEach(function (all) {
      all.checked = boxes.length > 0 && checked.length === boxes.length;
      all.indeterminate = checked.length > 0 && checked.length < boxes.length;
      all.disabled = boxes.length === 0;
    });
  }

  function install() {
    document.querySelectorAll("th[data-select-all]").forEach(function (th) {
      if (th.querySelector("[data-select-all-box]")) return;
      var label = document.createElement("label");
      label.className = "ops-check ops-select-all";
      var box = document.createElement("input");
      box.type = "checkbox";
      box.setAttribute("aria-label", "Select every open withdrawal on this page");
      box.dataset.selectAllBox = "";
      label.appendChild(box);
      label.appendChild(document.createTextNode(" All"));
      th.textContent = "";
      th.appendChild(label);
    });
    update();
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (!target.matches) return;
    if (target.matches("[data-select-all-box]")) {
      document.querySelectorAll(BOXES).forEach(function (box) { box.checked = target.checked; });
    }
    if (target.matches("[data-select-all-box], " + BOXES)) update();
  });
  document.addEventListener("DOMContentLoaded", install);
  // A filtered page, a row answered after its action, rows a bulk completion finished (out of band).
  document.addEventListener("htmx:afterSettle", install);
  document.addEventListener("htmx:oobAfterSwap", install);
})();
