// Alerts: the rules firing now, since when and when they were last sent.

import {get} from "../api.js";
import {h, replace, table, row} from "../dom.js";
import {timeEl} from "../format.js";
import {badge, empty, errorNotice} from "../ui.js";

export const EVENTS = [];   // alert events come to every page

export function mount(view) {
  const list = h("div", {"data-test": "alerts"}, h("p", {class: "muted"}, "Loading…"));
  const evaluated = h("p", {class: "muted"});
  view.append(h("h1", null, "Alerts"), list, evaluated);

  const load = async () => {
    try {
      const data = await get("/api/alerts");
      drawAlerts(list, data.alerts || []);
      replace(evaluated, data.evaluated_at ? ["Rules last evaluated ", timeEl(data.evaluated_at), "."] : null);
    } catch (err) {
      errorNotice(err);
    }
  };
  load();
  return {
    event(name) { if (name.startsWith("alert.")) load(); },
    reload: load,
  };
}

function drawAlerts(box, alerts) {
  if (!alerts.length) {
    replace(box, empty("Nothing is firing."));
    return;
  }
  const rows = alerts.slice(0, 500).map((a) => {
    const labels = Object.entries(a.labels || {}).filter(([k]) => !["alertname", "severity"].includes(k));
    return row([
      h("strong", null, a.rule || a.labels?.alertname),
      badge(a.labels?.severity || "warning"),
      h("span", {class: "mono"}, labels.map(([k, v]) => `${k}=${v}`).join(" ")),
      h("span", null, a.annotations?.summary || "", a.annotations?.description
        ? h("span", {class: "muted block-text"}, a.annotations.description) : null),
      timeEl(a.since), timeEl(a.last_sent),
    ], {"data-key": a.fingerprint, "data-test": "alert"});
  });
  replace(box, table("Firing alerts", ["rule", "severity", "labels", "summary", "since", "last sent"], rows));
}
