// Rates from cumulative counters: the change over the last few seconds of
// polls, per key.

const WINDOW_MS = 5000;
const MIN_SPAN_MS = 500;

export class Rates {
  private readonly samples = new Map<string, [number, number][]>();

  /** Records `value` at `now` (the server's clock) for `key`. */
  add(key: string, now: number, value: number | null): void {
    if (value == null) return;
    let s = this.samples.get(key);
    if (!s) this.samples.set(key, (s = []));
    const last = s[s.length - 1];
    if (last && (value < last[1] || now < last[0])) s.length = 0; // restarted
    if (last && now === last[0]) return;
    s.push([now, value]);
    while (s.length > 2 && s[1][0] <= now - WINDOW_MS) s.shift();
  }

  /** Per second, or null without two samples far enough apart. */
  get(key: string): number | null {
    const s = this.samples.get(key);
    if (!s || s.length < 2) return null;
    const [t0, v0] = s[0];
    const [t1, v1] = s[s.length - 1];
    return t1 - t0 < MIN_SPAN_MS ? null : ((v1 - v0) * 1000) / (t1 - t0);
  }
}
