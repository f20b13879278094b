// How figures read on the page. Unknown figures are an em dash, never 0.

export const DASH = "—";

// Beam's minimum and maximum timestamps, in milliseconds.
export const WATERMARK_BOUND = 9223372036854775;

const grouped = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat("en-US", {
  minimumFractionDigits: 1,
  maximumFractionDigits: 1,
});
const upToThree = new Intl.NumberFormat("en-US", { maximumFractionDigits: 3 });

export function count(n: number | null | undefined): string {
  return n == null ? DASH : grouped.format(n);
}

/** A metric value: integers grouped, fractions to three places. */
export function value(n: number | null | undefined): string {
  if (n == null) return DASH;
  return Number.isInteger(n) ? grouped.format(n) : upToThree.format(n);
}

export function rate(perSecond: number | null): string {
  if (perSecond == null) return DASH;
  if (perSecond > 0 && perSecond < 10) return `${oneDecimal.format(perSecond)}/s`;
  return `${grouped.format(perSecond)}/s`;
}

/** A latency in milliseconds. */
export function latency(ms: number | null | undefined): string {
  if (ms == null) return DASH;
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 100) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** Two latencies in the same unit: "4.2 / 31.0 ms". */
export function latencyPair(a: number, b: number | null): string {
  if (b == null) return latency(a);
  if (b < 1000) {
    const one = (v: number) => latency(v).replace(/ ms$/, "");
    return `${one(a)} / ${one(b)} ms`;
  }
  return `${(a / 1000).toFixed(2)} / ${(b / 1000).toFixed(2)} s`;
}

/** A span of time in milliseconds, to the precision a reader wants. */
export function duration(ms: number | null | undefined): string {
  if (ms == null) return DASH;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const pad = (n: number) => String(n).padStart(2, "0");
  const whole = Math.floor(s);
  if (whole < 3600) return `${Math.floor(whole / 60)} m ${pad(whole % 60)} s`;
  if (whole < 86400) return `${Math.floor(whole / 3600)} h ${pad(Math.floor(whole / 60) % 60)} m`;
  return `${Math.floor(whole / 86400)} d ${Math.floor(whole / 3600) % 24} h`;
}

export function bytes(n: number | null | undefined): string {
  if (n == null) return DASH;
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

const pad2 = (n: number) => String(n).padStart(2, "0");

/** Local date and time to the second. */
export function dateTime(ms: number | null | undefined): string {
  if (ms == null) return DASH;
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
  );
}

/** Local time of day to the millisecond. */
export function clock(ms: number): string {
  const d = new Date(ms);
  return (
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.` +
    String(d.getMilliseconds()).padStart(3, "0")
  );
}

export function isBound(wm: number): boolean {
  return Math.abs(wm) >= WATERMARK_BOUND;
}

/** A watermark: its time (with the date when not today), or −∞ / +∞. */
export function watermark(wm: number | null, now: number): string {
  if (wm == null) return DASH;
  if (wm <= -WATERMARK_BOUND) return "−∞";
  if (wm >= WATERMARK_BOUND) return "+∞";
  const sameDay = new Date(wm).toDateString() === new Date(now).toDateString();
  return sameDay ? clock(wm) : `${dateTime(wm).slice(0, 10)} ${clock(wm)}`;
}

/** How far a watermark trails the clock, or null when it means nothing. */
export function lagMs(wm: number | null, now: number): number | null {
  if (wm == null || isBound(wm)) return null;
  return Math.max(0, now - wm);
}

export function truncate(text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, Math.max(1, max - 1)) + "…";
}
