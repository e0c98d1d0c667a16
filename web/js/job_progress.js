// A job's live state folded from its event stream (the trainer's events: start, progress,
// validation, checkpoint, samples, done, plus the gateway's state changes). Pure logic, no DOM.
// The events' fields are the contract in chatforge/contracts/events.py.

export const FINAL_STATES = new Set(["succeeded", "failed", "cancelled"]);
// The events version this page understands; a newer event is listed but not folded in, as its
// fields may mean something else (chatforge/contracts/events.py: EVENTS_VERSION).
export const EVENTS_VERSION = 1;

export class JobProgress {
  constructor() {
    this.stage = null;
    this.step = 0;
    this.numSteps = null;
    this.latest = {}; // loss, lr, tokens_per_s, mfu, eta_s, val_bpb
    this.state = null;
  }

  /** Fold one event: `type` names it, the rest is its data. */
  add(type, data) {
    if ((data.version ?? EVENTS_VERSION) > EVENTS_VERSION) return;
    if (data.stage && data.stage !== this.stage) {
      // A new stage (in a pipeline): the last stage's numbers say nothing about this one.
      this.stage = data.stage;
      this.step = 0;
      this.numSteps = null;
      this.latest = {};
    }
    if (type === "start" && data.num_steps) this.numSteps = data.num_steps;
    if (typeof data.step === "number") this.step = data.step;
    for (const key of ["loss", "lr", "tokens_per_s", "mfu", "eta_s", "val_bpb"]) {
      if (typeof data[key] === "number") this.latest[key] = data[key];
    }
    if (data.state) this.state = data.state;
  }

  /** 0..1 through the current stage, or null while the number of steps is unknown. */
  get fraction() {
    return this.numSteps ? Math.min(1, this.step / this.numSteps) : null;
  }
}
