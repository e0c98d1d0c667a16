// The chat page's model picker: every model the gateway serves (GET /v1/models), each with the
// checkpoint behind it, and the deployment under way or failed (GET /v1/deployments/current),
// listed so the user knows a switch is coming but not choosable until it serves.

import { api } from "./api.js";
import { h, mount } from "./dom.js";

/** Fill `select`; choose `preferred` when it is served, else the first model. Returns the models. */
export async function fillModelPicker(select, preferred) {
  const [models, deployment] = await Promise.all([
    api.models(),
    // 404 until something is deployed through the API; a picker does without it.
    api.deployment().catch(() => null),
  ]);
  const served = models.data;
  const options = served.map((m) => h("option", { value: m.id }, m.checkpoint ? `${m.id} · ${m.checkpoint}` : m.id));
  if (!served.length) options.push(h("option", { value: "" }, "no model served"));
  if (deployment && deployment.state !== "serving") {
    const what = deployment.state === "loading" ? "loading…" : "failed to load";
    options.push(h("option", { value: `deployment:${deployment.id}`, disabled: true }, `${deployment.checkpoint} (${what})`));
  }
  mount(select, options);
  select.value = served.some((m) => m.id === preferred) ? preferred : (served[0]?.id ?? "");
  return served;
}
