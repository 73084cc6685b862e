// Live broadcasts on host pages, over the Erlang WebSocket. A connection opens with a
// short-lived token (the page comes with a first one) and the service closes it when the
// token expires, so at 80% of a token's lifetime the page fetches a fresh one from
// /api/messaging/ws-token/ (with its session cookie) and sends it on the socket:
// {"type": "auth", "token": "..."}. Every reconnect fetches a fresh token too.
// When the connection drops or no token can be had (signed out, server down), the page
// retries after a growing, jittered delay: never a busy loop.
(function () {
  "use strict";
  var box = document.getElementById("broadcasts");
  if (!box || !box.dataset.wsUrl) return;
  var RENEW_AT = 0.8; // share of a token's lifetime after which it is renewed
  var FIRST_DELAY_MS = 1000;
  var MAX_DELAY_MS = 30000;
  var STABLE_MS = 30000; // a connection that lasted this long starts the delays afresh
  var delay = FIRST_DELAY_MS;
  var renewTimer = null;

  function show(text) {
    var div = document.createElement("div");
    div.className = "host-broadcast";
    div.setAttribute("role", "status");
    var strong = document.createElement("strong");
    strong.textContent = "Message from StayAfrica: ";
    div.appendChild(strong);
    div.appendChild(document.createTextNode(text));
    box.prepend(div);
  }

  // Resolves with {token, url, expires_in, expires_at}; rejects on any failure.
  function fetchToken() {
    return fetch(box.dataset.wsTokenUrl, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    }).then(function (response) {
      if (!response.ok) throw new Error("ws-token answered " + response.status);
      return response.json();
    });
  }

  function connect(token, expiresIn) {
    var url = box.dataset.wsUrl + (box.dataset.wsUrl.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(token);
    var ws = new WebSocket(url);
    var openedAt = null;
    ws.onopen = function () {
      openedAt = Date.now();
      box.dataset.connected = "true";
      scheduleRenewal(ws, expiresIn);
    };
    ws.onmessage = function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (msg.type === "ping" || msg.type === "welcome" || msg.type === "auth_ok") return;
      var text = msg.text || msg.body || (msg.message && (msg.message.text || msg.message.body));
      if (text) show(text);
    };
    ws.onclose = function () {
      clearTimeout(renewTimer);
      box.dataset.connected = "false";
      // Accepted then closed at once (e.g. too many connections) keeps backing off.
      if (openedAt !== null && Date.now() - openedAt >= STABLE_MS) delay = FIRST_DELAY_MS;
      reconnectLater();
    };
  }

  function scheduleRenewal(ws, expiresIn) {
    if (!(expiresIn > 0)) return; // no lifetime known: the service's close starts a reconnect
    renewTimer = setTimeout(function () { renew(ws); }, expiresIn * 1000 * RENEW_AT);
  }

  // Without a fresh token the session simply ends when its token expires; the close
  // then starts the reconnect loop.
  function renew(ws) {
    fetchToken().then(function (fresh) {
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(JSON.stringify({ type: "auth", token: fresh.token }));
      scheduleRenewal(ws, fresh.expires_in);
    }, function () {});
  }

  function reconnectLater() {
    // Jitter, so pages dropped together (a node restart) do not come back together.
    var wait = delay * (0.5 + Math.random() / 2);
    delay = Math.min(delay * 2, MAX_DELAY_MS);
    setTimeout(function () {
      fetchToken().then(function (fresh) { connect(fresh.token, fresh.expires_in); }, reconnectLater);
    }, wait);
  }

  connect(box.dataset.wsToken, Number(box.dataset.wsExpiresIn));
})();
