// Job states (Beam's names) and their look.

const ACTIVE = new Set(["STARTING", "RUNNING", "CANCELLING", "DRAINING", "UPDATING"]);

export function isActive(state: string): boolean {
  return ACTIVE.has(state);
}

export function stateClass(state: string): string {
  switch (state) {
    case "RUNNING":
      return "badge badge-running";
    case "DONE":
    case "DRAINED":
      return "badge badge-done";
    case "FAILED":
      return "badge badge-failed";
    case "CANCELLED":
    case "STOPPED":
      return "badge badge-stopped";
    default:
      return ACTIVE.has(state) ? "badge badge-busy" : "badge";
  }
}
