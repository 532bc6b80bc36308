
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tcpoom-data").textContent);
  var tip = document.createElement("div");
  tip.className = "tip";
  tip.hidden = true;
  document.body.appendChild(tip);
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function when(c, i) {
    var s = i * c.step;
    if (c.t0 === null) { return "+" + s + " s"; }
    var d = new Date(c.t0 + s * 1000);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
  }
  var hooked = 0;
  Array.prototype.forEach.call(document.querySelectorAll("svg[data-chart]"), function (svg) {
    var c = data.charts[Number(svg.getAttribute("data-chart"))];
    var cursor = svg.querySelector(".cursor");
    if (!c || !cursor) { return; }
    function hide() { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); }
    svg.addEventListener("mousemove", function (ev) {
      var ctm = svg.getScreenCTM();
      if (!ctm) { return; }
      var pt = svg.createSVGPoint();
      pt.x = ev.clientX; pt.y = ev.clientY;
      var p = pt.matrixTransform(ctm.inverse());
      var i = Math.floor((p.x - c.px0) / c.pw * c.span / c.step);
      if (i < 0 || i >= c.n) { hide(); return; }
      var x = c.px0 + (i + 0.5) * c.step / c.span * c.pw;
      cursor.setAttribute("x1", x); cursor.setAttribute("x2", x);
      cursor.setAttribute("visibility", "visible");
      var lines = [when(c, i) + (c.step > 1 ? " (max of " + c.step + " s)" : "")];
      c.series.forEach(function (s) {
        var v = s.v[i];
        lines.push(s.name + ": " + (v === null || v === undefined ? "no sample" : v.toLocaleString("en-US")) +
                   " " + c.unit);
      });
      tip.textContent = lines.join("\n");
      tip.hidden = false;
      var left = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      tip.style.left = Math.max(4, left) + "px";
      tip.style.top = (ev.clientY + 14) + "px";
    });
    svg.addEventListener("mouseleave", hide);
    hooked += 1;
  });
  document.documentElement.setAttribute("data-charts-hooked", String(hooked));
})();
