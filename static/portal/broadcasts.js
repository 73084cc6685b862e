// The broadcast form (templates/portal/broadcasts.html): shows only the field the chosen
// audience needs, and runs the user picker, whose matches come from an htmx search.
(function () {
  "use strict";

  // Fields marked data-audience-only="<audience>" are shown for that audience only. A hidden
  // field still posts, but the server ignores what the chosen audience does not use.
  function showAudienceFields(form) {
    var chosen = form.querySelector('input[name="audience"]:checked');
    var audience = chosen ? chosen.value : "";
    form.querySelectorAll("[data-audience-only]").forEach(function (wrapper) {
      wrapper.hidden = wrapper.dataset.audienceOnly !== audience;
    });
  }

  // Tell the form something changed, so the recipient count (hx-trigger "change") follows.
  function announceChange(form) {
    form.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function chip(id, label) {
    var item = document.createElement("li");
    item.className = "ops-chip";
    item.dataset.userId = id;
    var name = document.createElement("span");
    name.textContent = label;
    var remove = document.createElement("button");
    remove.type = "button";
    remove.className = "ops-chip-remove";
    remove.setAttribute("aria-label", "Remove " + label);
    remove.dataset.removeUser = "";
    remove.textContent = "×";
    var input = document.createElement("input");
    input.type = "hidden";
    input.name = "user_ids";
    input.value = id;
    item.append(name, " ", remove, input);
    return item;
  }

  function pickUser(form, button) {
    var chips = form.querySelector("[data-user-chips]");
    var id = button.dataset.pickUser;
    if (!chips.querySelector('[data-user-id="' + id + '"]')) {
      chips.appendChild(chip(id, button.dataset.userLabel));
    }
    var search = form.querySelector("#user-search");
    search.value = "";
    form.querySelector("#user-matches").innerHTML = "";
    search.focus();
    announceChange(form);
  }

  function removeUser(form, button) {
    button.closest(".ops-chip").remove();
    form.querySelector("#user-search").focus();
    announceChange(form);
  }

  function setUp(form) {
    if (form.dataset.ready) return;
    form.dataset.ready = "true";
    showAudienceFields(form);
    form.addEventListener("change", function (event) {
      if (event.target.name === "audience") showAudienceFields(form);
    });
    form.addEventListener("click", function (event) {
      var pick = event.target.closest("[data-pick-user]");
      var remove = event.target.closest("[data-remove-user]");
      if (pick) pickUser(form, pick);
      else if (remove) removeUser(form, remove);
    });
    // Enter in the search box picks the only match rather than submitting the form.
    form.querySelector("#user-search").addEventListener("keydown", function (event) {
      if (event.key !== "Enter") return;
      event.preventDefault();
      var matches = form.querySelectorAll("[data-pick-user]");
      if (matches.length === 1) pickUser(form, matches[0]);
    });
  }

  function init() {
    document.querySelectorAll("[data-broadcast-form]").forEach(setUp);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
