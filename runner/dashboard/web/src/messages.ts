// The job's messages, appended as they come (polling with ?after=), errors
// with their Python tracebacks as printed: preformatted, monospace, lines
// wrapped but never joined.

import type { Message } from "./api";
import { h, setText } from "./dom";
import { clock, dateTime } from "./format";

const RANK: Record<string, number> = { DEBUG: 0, DETAILED: 1, BASIC: 2, WARNING: 3, ERROR: 4 };
const MAX_SHOWN = 2000;

const rank = (importance: string) => RANK[importance] ?? 2;

export class MessageLog {
  readonly el: HTMLElement;
  readonly tools: HTMLElement;
  private readonly list: HTMLElement;
  private readonly summary: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly filter: HTMLSelectElement;
  private next: number | null = null;
  private total = 0;
  private errors = 0;
  private warnings = 0;

  constructor() {
    this.filter = h(
      "select",
      { testid: "message-filter", attrs: { "aria-label": "Show messages from" } },
      h("option", { text: "Everything", attrs: { value: "0" } }),
      h("option", { text: "Info and up", attrs: { value: "2" } }),
      h("option", { text: "Warnings and errors", attrs: { value: "3" } }),
      h("option", { text: "Errors", attrs: { value: "4" } }),
    );
    this.filter.value = "0";
    this.filter.addEventListener("change", () => this.applyFilter());
    this.summary = h("span", { class: "muted", testid: "message-count" });
    this.tools = h("div", { class: "card-tools" }, this.summary, this.filter);
    this.list = h("div", { class: "log", testid: "messages" });
    this.empty = h("p", { class: "empty", text: "No messages yet." });
    this.el = h("div", {}, this.list, this.empty);
    this.render();
  }

  /** Where the next poll starts (null: from the beginning). */
  get after(): number | null {
    return this.next;
  }

  append(messages: Message[], next: number): void {
    this.next = next;
    if (!messages.length) return;
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 24;
    const min = Number(this.filter.value);
    for (const m of messages) {
      const level = m.importance.toLowerCase();
      const row = h(
        "div",
        {
          class: `msg msg-${level}`,
          testid: "message",
          attrs: { "data-importance": m.importance, "data-seq": String(m.seq) },
        },
        h(
          "div",
          { class: "msg-head" },
          h("span", {
            class: "msg-time",
            text: m.time_ms == null ? "" : clock(m.time_ms),
            title: m.time_ms == null ? "" : dateTime(m.time_ms),
          }),
          h("span", { class: `msg-level level-${level}`, text: m.importance }),
        ),
        h("pre", { class: "msg-text", text: m.text }),
      );
      row.hidden = rank(m.importance) < min;
      this.list.append(row);
      this.total++;
      if (m.importance === "ERROR") this.errors++;
      if (m.importance === "WARNING") this.warnings++;
    }
    while (this.list.childElementCount > MAX_SHOWN) this.list.firstElementChild!.remove();
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
    this.render();
  }

  get errorCount(): number {
    return this.errors;
  }

  private applyFilter(): void {
    const min = Number(this.filter.value);
    for (const row of this.list.children) {
      (row as HTMLElement).hidden = rank((row as HTMLElement).dataset.importance ?? "") < min;
    }
    this.render();
  }

  private render(): void {
    const parts = [`${this.total} message${this.total === 1 ? "" : "s"}`];
    if (this.errors) parts.push(`${this.errors} error${this.errors === 1 ? "" : "s"}`);
    if (this.warnings) parts.push(`${this.warnings} warning${this.warnings === 1 ? "" : "s"}`);
    setText(this.summary, parts.join(" · "));
    const shown = [...this.list.children].some((r) => !(r as HTMLElement).hidden);
    this.empty.hidden = shown;
    setText(this.empty, this.total ? "No messages at this level." : "No messages yet.");
  }
}
