// A job's live state folded from its event stream (the trainer's events: start, progress,
// validation, checkpoint, samples, done, eval, plus the gateway's state changes): the latest numbers,
// the curves the jobs page draws, and the timeline of a pipeline's stages. Pure logic, no DOM.
// The events' fields are the contract in chatforge/contracts/events.py.

export const FINAL_STATES = new Set(["succeeded", "failed", "cancelled"]);
// The events version this page understands; a newer event is listed but not folded in, as its
// fields may mean something else (chatforge/contracts/events.py: EVENTS_VERSION).
export const EVENTS_VERSION = 1;
// The curves the jobs page draws: progress events carry the first three, validation events the last.
export const CURVES = ["loss", "lr", "tokens_per_s", "val_bpb"];

export class JobProgress {
  constructor() {
    this.stage = null;
    this.step = 0;
    this.numSteps = null;
    this.latest = {}; // loss, lr, tokens_per_s, mfu, eta_s, val_bpb
    this.state = null;
    // Per curve, points {x, y, stage}. A pipeline's stages run one after another on one x axis (as
    // in the report card's plots): x is the step plus the steps of the stages before.
    this.curves = Object.fromEntries(CURVES.map((name) => [name, []]));
    // One entry per phase in the order they began: {stage, start, end, step, numSteps, status}
    // with status "running", "done", or the job's final state for the phase it ended in.
    this.timeline = [];
    this.offset = 0; // x of the current stage's step 0
    this.maxX = 0;
  }

  /** Fold one event: `type` names it, the rest is its data. */
  add(type, data) {
    if ((data.version ?? EVENTS_VERSION) > EVENTS_VERSION) return;
    // The eval stage reports under the measured checkpoint's stage name; it is a phase of its own,
    // not that stage again.
    const phase = type === "eval" ? "eval" : data.stage;
    if (phase && phase !== this.stage) this.enter(phase, data.time);
    if (type === "start" && data.num_steps) this.numSteps = data.num_steps;
    if (typeof data.step === "number") this.step = data.step;
    for (const key of ["loss", "lr", "tokens_per_s", "mfu", "eta_s", "val_bpb"]) {
      if (typeof data[key] === "number") this.latest[key] = data[key];
    }
    if (phase !== "eval" && (type === "progress" || type === "validation") && typeof data.step === "number") {
      const x = this.offset + data.step;
      this.maxX = Math.max(this.maxX, x);
      for (const name of CURVES) {
        if (typeof data[name] === "number" && Number.isFinite(data[name])) this.curves[name].push({ x, y: data[name], stage: this.stage });
      }
    }
    this.track(type, data);
    if (data.state) this.state = data.state;
  }

  /** A new stage (in a pipeline): the last stage's numbers say nothing about this one. */
  enter(phase, time) {
    this.stage = phase;
    this.step = 0;
    this.numSteps = null;
    this.latest = {};
    this.offset = this.maxX;
    const previous = this.timeline.at(-1);
    if (previous && previous.status === "running") previous.status = "done"; // the next one began
    this.timeline.push({ stage: phase, start: time ?? null, end: time ?? null, step: 0, numSteps: null, status: "running" });
  }

  track(type, data) {
    const current = this.timeline.at(-1);
    if (current && data.stage !== undefined) {
      if (typeof data.time === "number") {
        current.start ??= data.time;
        current.end = data.time;
      }
      current.step = this.step;
      current.numSteps = this.numSteps;
      if (type === "done") current.status = "done";
    }
    if (type === "state" && FINAL_STATES.has(data.state) && current?.status === "running") {
      current.status = data.state === "succeeded" ? "done" : data.state;
    }
  }

  /** 0..1 through the current stage, or null while the number of steps is unknown. */
  get fraction() {
    return this.numSteps ? Math.min(1, this.step / this.numSteps) : null;
  }
}
