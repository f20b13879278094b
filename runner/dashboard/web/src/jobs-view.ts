// The home page: every job the server knows, newest first.

import { fetchJobs, type JobSummary } from "./api";
import { h, KeyedTable, section, setText } from "./dom";
import * as fmt from "./format";
import { stateClass } from "./states";
import type { View } from "./view";

export class JobsView implements View {
  readonly el: HTMLElement;
  private readonly table: KeyedTable<JobSummary>;
  private readonly counts = h("span", { class: "muted", testid: "job-counts" });

  constructor() {
    this.table = new KeyedTable<JobSummary>(
      [
        {
          title: "Job",
          class: "job-name",
          cell: (j) => ({ text: j.name || j.id, detail: j.name ? j.id : "" }),
        },
        { title: "State", testid: "job-state", cell: (j) => ({ text: j.state, class: stateClass(j.state) }) },
        { title: "Mode", cell: (j) => (j.streaming ? "streaming" : "batch") },
        { title: "Started", testid: "job-started", cell: (j) => fmt.dateTime(j.started_ms) },
        { title: "Duration", numeric: true, testid: "job-duration", cell: (j) => fmt.duration(j.duration_ms) },
      ],
      (j) => j.id,
      "job-row",
      "No jobs yet. Run a pipeline with --job_endpoint pointing at this job server.",
      (tr, j) => {
        tr.classList.add("clickable");
        tr.dataset.jobId = j.id;
        tr.addEventListener("click", (e) => {
          if (!(e.target as Element).closest("a")) location.hash = `#/jobs/${encodeURIComponent(j.id)}`;
        });
        // The name is a real link too (middle-click, keyboard).
        const name = tr.cells[0].firstElementChild!;
        const link = h("a", { href: `#/jobs/${encodeURIComponent(j.id)}`, class: "cell-text" });
        name.replaceWith(link);
      },
    );
    this.el = h(
      "div",
      { class: "page", testid: "jobs-page" },
      h("h1", { class: "page-title", text: "Jobs" }),
      section("All jobs, newest first", "jobs", this.counts, this.table.el),
    );
  }

  async poll(): Promise<string> {
    const list = await fetchJobs();
    this.table.update([...list.jobs].reverse());
    const byState = new Map<string, number>();
    for (const j of list.jobs) byState.set(j.state, (byState.get(j.state) ?? 0) + 1);
    setText(
      this.counts,
      [...byState].map(([state, n]) => `${n} ${state.toLowerCase()}`).join(" · ") || "no jobs",
    );
    document.title = "Jobs · ferrobeam";
    return list.version;
  }
}
