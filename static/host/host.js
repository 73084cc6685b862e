// Live broadcasts on host pages: the Erlang WebSocket, authenticated with a short-lived
// token the page was rendered with. Reconnects with a growing delay if the service drops.
(function () {
  "use strict";
  var box = document.getElementById("broadcasts");
  if (!box || !box.dataset.wsUrl) return;
  var delay = 1000;

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

  function connect() {
    var url = box.dataset.wsUrl + (box.dataset.wsUrl.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(box.dataset.wsToken);
    var ws = new WebSocket(url);
    ws.onopen = function () { delay = 1000; box.dataset.connected = "true"; };
    ws.onmessage = function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (msg.type === "ping" || msg.type === "welcome") return;
      var text = msg.text || msg.body || (msg.message && (msg.message.text || msg.message.body));
      if (text) show(text);
    };
    ws.onclose = function () { box.dataset.connected = "false"; setTimeout(connect, delay); delay = Math.min(delay * 2, 15000); };
  }
  connect();
})();
