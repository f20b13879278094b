// One job: its stage graph with live figures, its stages, workers,
// checkpoints, user metrics and messages.

import {
  fetchJob,
  fetchMessages,
  HttpError,
  type Checkpoint,
  type JobDetail,
  type Metric,
  type Stage,
  type Worker,
} from "./api";
import { h, KeyedTable, section, setClass, setText, svg } from "./dom";
import * as fmt from "./format";
import { kindClass, kindLabel } from "./kinds";
import { stageLabel } from "./labels";
import { MessageLog } from "./messages";
import { Rates } from "./rates";
import { StageGraph, type NodeFigures } from "./stage-graph";
import { isActive, stateClass } from "./states";
import type { View } from "./view";

/** A watermark further behind than this looks worrying. */
const LAG_WARNING_MS = 60_000;

interface Tile {
  value: HTMLElement;
  note: HTMLElement;
}

export class JobView implements View {
  readonly el: HTMLElement;
  private job: JobDetail | null = null;
  private readonly rates = new Rates();
  private selected: string | null = null;

  private readonly head = {
    name: h("span", { testid: "job-name" }),
    state: h("span", { testid: "job-state" }),
    mode: h("span", { class: "tag", testid: "job-mode" }),
    id: h("code", { testid: "job-id" }),
    started: h("span", { testid: "job-started" }),
    finished: h("span", { testid: "job-finished" }),
  };
  private readonly notice = h("div", { class: "notice", testid: "job-notice" });
  private readonly tiles: Record<string, Tile> = {};
  private readonly tileRow = h("div", { class: "tiles", testid: "summary" });
  private readonly graph: StageGraph;
  private readonly stages: KeyedTable<Stage>;
  private readonly workers: KeyedTable<Worker>;
  private readonly checkpoints: KeyedTable<Checkpoint>;
  private readonly checkpointChart = h("div", { class: "bars", testid: "checkpoint-chart" });
  private readonly metrics: KeyedTable<Metric>;
  private readonly messages = new MessageLog();

  constructor(private readonly jobId: string) {
    this.graph = new StageGraph((id) => this.select(id, true));
    this.stages = this.stageTable();
    this.workers = this.workerTable();
    this.checkpoints = this.checkpointTable();
    this.metrics = this.metricTable();
    for (const [key, label] of [
      ["duration", "Duration"],
      ["stages", "Stages"],
      ["watermark", "Watermark"],
      ["workers", "Workers"],
      ["checkpoints", "Checkpoints"],
      ["errors", "Errors"],
    ]) {
      const tile = { value: h("div", { class: "tile-value" }), note: h("div", { class: "tile-note" }) };
      this.tiles[key] = tile;
      this.tileRow.append(
        h("div", { class: "tile", testid: `tile-${key}` }, h("div", { class: "tile-label", text: label }), tile.value, tile.note),
      );
    }
    this.head.id.textContent = jobId;
    this.notice.hidden = true;
    this.el = h(
      "div",
      { class: "page", testid: "job-page", attrs: { "data-job-id": jobId } },
      h("nav", { class: "crumbs" }, h("a", { href: "#/", text: "Jobs" }), h("span", { text: "/" }), h("span", { text: jobId })),
      h(
        "header",
        { class: "job-head" },
        h("h1", { class: "page-title" }, this.head.name, this.head.state, this.head.mode),
        h(
          "div",
          { class: "job-meta" },
          h("span", {}, "id ", this.head.id),
          h("span", {}, "started ", this.head.started),
          h("span", {}, "finished ", this.head.finished),
        ),
      ),
      this.notice,
      this.tileRow,
      section(
        "Stage graph",
        "graph",
        h("span", { class: "muted", text: "fused Python stages and native operations · click a stage for its row" }),
        this.graph.el,
      ),
      section("Stages", "stages", null, this.stages.el),
      h(
        "div",
        { class: "columns" },
        section("Workers", "workers", null, this.workers.el),
        section(
          "Checkpoints",
          "checkpoints",
          null,
          this.checkpointChart,
          h("div", { class: "checkpoints-scroll" }, this.checkpoints.el),
        ),
      ),
      section("User metrics", "metrics", null, this.metrics.el),
      section("Messages", "messages-card", this.messages.tools, this.messages.el),
    );
  }

  async poll(): Promise<void> {
    let job: JobDetail;
    let messages;
    try {
      [job, messages] = await Promise.all([
        fetchJob(this.jobId),
        fetchMessages(this.jobId, this.messages.after),
      ]);
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) {
        this.showNotice(`This job is not on the server (any more): ${e.message}`);
        return;
      }
      throw e;
    }
    this.notice.hidden = true;
    this.job = job;
    for (const s of job.stages) {
      this.rates.add(`${s.id}/in`, job.now_ms, s.elements_in);
      this.rates.add(`${s.id}/out`, job.now_ms, s.elements_out);
    }
    this.messages.append(messages.messages, messages.next);
    this.render(job);
  }

  private showNotice(text: string): void {
    setText(this.notice, text);
    this.notice.hidden = false;
  }

  private render(job: JobDetail): void {
    document.title = `${job.name || job.id} · ferrobeam`;
    setText(this.head.name, job.name || job.id);
    setText(this.head.state, job.state);
    setClass(this.head.state, stateClass(job.state));
    setText(this.head.mode, job.streaming ? "streaming" : "batch");
    setText(this.head.started, fmt.dateTime(job.started_ms));
    setText(this.head.finished, job.finished_ms == null ? (isActive(job.state) ? "not yet" : fmt.DASH) : fmt.dateTime(job.finished_ms));
    this.el.classList.toggle("batch", !job.streaming);

    this.renderTiles(job);
    this.graph.update(job.stages, (s) => this.nodeFigures(s, job));
    this.graph.select(this.selected);
    this.stages.update(job.stages);
    this.workers.update(job.workers);
    this.checkpoints.update([...job.checkpoints].reverse());
    this.renderCheckpointChart(job.checkpoints);
    this.metrics.update(job.metrics);
  }

  private renderTiles(job: JobDetail): void {
    const set = (key: string, value: string, note: string, cls = "") => {
      setText(this.tiles[key].value, value);
      setText(this.tiles[key].note, note);
      setClass(this.tiles[key].value, `tile-value ${cls}`.trim());
    };
    set("duration", fmt.duration(job.duration_ms), job.streaming ? "streaming job" : "batch job");

    const done = job.stages.filter((s) => s.state === "done").length;
    const running = job.stages.filter((s) => s.state === "running").length;
    set("stages", `${done} / ${job.stages.length}`, running ? `done · ${running} running` : "done");

    const lags = job.stages
      .map((s) => fmt.lagMs(s.output_watermark_ms, job.now_ms))
      .filter((l): l is number => l != null);
    if (lags.length) {
      const worst = Math.max(...lags);
      const oldest = Math.min(
        ...job.stages
          .map((s) => s.output_watermark_ms)
          .filter((w): w is number => w != null && !fmt.isBound(w)),
      );
      set("watermark", fmt.duration(worst), `behind · oldest ${fmt.watermark(oldest, job.now_ms)}`, worst > LAG_WARNING_MS ? "warn" : "");
    } else {
      set("watermark", fmt.DASH, job.streaming ? "no watermark yet" : "none in batch");
    }

    const live = job.workers.filter((w) => w.state === "running").length;
    const restarts = job.workers.reduce((a, w) => a + w.restarts, 0);
    set(
      "workers",
      `${live} / ${job.workers.length}`,
      `running · ${restarts} restart${restarts === 1 ? "" : "s"}`,
      restarts ? "warn" : "",
    );

    const last = job.checkpoints[job.checkpoints.length - 1];
    const failed = job.checkpoints.filter((c) => !c.ok).length;
    set(
      "checkpoints",
      String(job.checkpoints.length),
      !last ? "none taken" : failed ? `${failed} failed · last ${fmt.bytes(last.bytes)}` : `last ${fmt.bytes(last.bytes)} in ${fmt.latency(last.duration_ms)}`,
      failed ? "warn" : "",
    );

    const errors = this.messages.errorCount;
    set("errors", String(errors), errors ? "see the messages below" : "no error messages", errors ? "bad" : "");
  }

  private rate(stage: Stage, which: "in" | "out"): number | null {
    return stage.state === "running" ? this.rates.get(`${stage.id}/${which}`) : null;
  }

  private nodeFigures(s: Stage, job: JobDetail): NodeFigures {
    const running = s.state === "running";
    const io =
      s.elements_in == null && s.elements_out == null
        ? "elements not counted"
        : running
          ? `in ${fmt.rate(this.rate(s, "in"))} · out ${fmt.rate(this.rate(s, "out"))}`
          : `in ${fmt.count(s.elements_in)} · out ${fmt.count(s.elements_out)}`;
    const lag = fmt.lagMs(s.output_watermark_ms, job.now_ms);
    const parts: string[] = [];
    if (job.streaming) {
      parts.push(lag == null ? `wm ${fmt.watermark(s.output_watermark_ms, job.now_ms)}` : `lag ${fmt.duration(lag)}`);
      if (s.queued != null) parts.push(`queued ${fmt.count(s.queued)}`);
    } else {
      parts.push(`${fmt.count(s.bundles)} bundle${s.bundles === 1 ? "" : "s"}`);
      if (s.bundle_ms_avg != null) parts.push(`${fmt.latency(s.bundle_ms_avg)} avg`);
    }
    return { io, extra: parts.join(" · "), hot: lag != null && lag > LAG_WARNING_MS };
  }

  private select(stageId: string, scroll: boolean): void {
    this.selected = this.selected === stageId ? null : stageId;
    this.graph.select(this.selected);
    for (const s of this.job?.stages ?? []) {
      this.stages.row(s.id)?.classList.toggle("selected", s.id === this.selected);
    }
    if (scroll && this.selected) {
      this.stages.row(this.selected)?.scrollIntoView({ behavior: "smooth", block: "nearest" });
    }
  }

  private stageTable(): KeyedTable<Stage> {
    const now = () => this.job?.now_ms ?? Date.now();
    const wm = (w: number | null) => ({ text: fmt.watermark(w, now()), title: w == null || fmt.isBound(w) ? "" : fmt.dateTime(w) });
    return new KeyedTable<Stage>(
      [
        {
          title: "Stage",
          class: "stage-name",
          cell: (s) => ({
            text: stageLabel(s),
            detail: kindLabel(s.kind) + (s.transforms.length > 1 ? ` · ${s.transforms.length} transforms` : ""),
            class: `kind-mark ${kindClass(s.kind)}`,
            title: s.transforms.join("\n"),
          }),
        },
        { title: "State", class: "nowrap", testid: "stage-state", cell: (s) => ({ text: s.state, class: `dot state-${s.state}` }) },
        { title: "In", numeric: true, testid: "elements-in", cell: (s) => fmt.count(s.elements_in) },
        { title: "In/s", numeric: true, testid: "rate-in", cell: (s) => fmt.rate(this.rate(s, "in")) },
        { title: "Out", numeric: true, testid: "elements-out", cell: (s) => fmt.count(s.elements_out) },
        { title: "Out/s", numeric: true, testid: "rate-out", cell: (s) => fmt.rate(this.rate(s, "out")) },
        { title: "Bundles", numeric: true, testid: "bundles", cell: (s) => fmt.count(s.bundles) },
        {
          title: "Latency avg / max",
          numeric: true,
          testid: "bundle-latency",
          cell: (s) => ({
            text: s.bundle_ms_avg == null ? fmt.DASH : fmt.latencyPair(s.bundle_ms_avg, s.bundle_ms_max),
            title: "bundle (native stages: step) duration, mean / longest",
          }),
        },
        { title: "Queued", numeric: true, testid: "queued", cell: (s) => fmt.count(s.queued) },
        { title: "Input WM", numeric: true, class: "wm", testid: "input-watermark", cell: (s) => wm(s.input_watermark_ms) },
        { title: "Output WM", numeric: true, class: "wm", testid: "watermark", cell: (s) => wm(s.output_watermark_ms) },
        {
          title: "Lag",
          numeric: true,
          class: "wm",
          testid: "watermark-lag",
          cell: (s) => {
            const lag = fmt.lagMs(s.output_watermark_ms, now());
            return { text: lag == null ? fmt.DASH : fmt.duration(lag), class: lag != null && lag > LAG_WARNING_MS ? "warn" : "" };
          },
        },
      ],
      (s) => s.id,
      "stage-row",
      "No stages yet.",
      (tr, s) => {
        tr.dataset.stageId = s.id;
        tr.classList.add("clickable");
        // A selected stage shows what it runs.
        if (s.transforms.length > 1 || s.transforms[0] !== stageLabel(s)) {
          tr.cells[0].append(h("ul", { class: "transforms" }, ...s.transforms.map((t) => h("li", { text: t }))));
        }
        tr.addEventListener("click", () => this.select(s.id, false));
      },
    );
  }

  private workerTable(): KeyedTable<Worker> {
    return new KeyedTable<Worker>(
      [
        { title: "Worker", cell: (w) => ({ text: this.workerName(w), class: "mono", title: w.id }) },
        { title: "Environment", class: "wrap-anywhere", cell: (w) => w.environment },
        {
          title: "Process",
          numeric: true,
          testid: "worker-pid",
          cell: (w) => {
            if (w.pid != null) return { text: String(w.pid), title: "process id on the job server's host" };
            if (w.pool) return { text: `pool ${w.pool}`, class: "mono", title: `started by the worker pool at ${w.pool}` };
            return { text: fmt.DASH, title: "not a process ferrobeam started (in-process)" };
          },
        },
        { title: "State", class: "nowrap", testid: "worker-state", cell: (w) => ({ text: w.state, class: `dot state-${w.state}` }) },
        { title: "Restarts", numeric: true, testid: "worker-restarts", cell: (w) => ({ text: fmt.count(w.restarts), class: w.restarts ? "warn" : "" }) },
        { title: "Bundles", numeric: true, cell: (w) => fmt.count(w.bundles) },
      ],
      (w) => w.id,
      "worker-row",
      "No SDK workers (the job ran no Python stage, or has not started).",
    );
  }

  /** A worker's id without the job's and the environment's names. */
  private workerName(w: Worker): string {
    if (!w.id) return "(unnamed)";
    let name = w.id;
    for (const prefix of [`${this.jobId}-`, `${w.environment}-`]) {
      if (name.startsWith(prefix) && name.length > prefix.length) name = name.slice(prefix.length);
    }
    return name;
  }

  private checkpointTable(): KeyedTable<Checkpoint> {
    return new KeyedTable<Checkpoint>(
      [
        { title: "#", numeric: true, cell: (c) => String(c.id) },
        { title: "Kind", cell: (c) => c.kind },
        { title: "Started", cell: (c) => ({ text: fmt.clock(c.started_ms), title: fmt.dateTime(c.started_ms) }) },
        { title: "Duration", numeric: true, testid: "checkpoint-duration", cell: (c) => fmt.latency(c.duration_ms) },
        { title: "Size", numeric: true, testid: "checkpoint-size", cell: (c) => fmt.bytes(c.bytes) },
        {
          title: "Outcome",
          class: "nowrap",
          cell: (c) => (c.ok ? { text: "ok", class: "dot state-done" } : { text: "failed", class: "dot state-failed", title: c.error ?? "" }),
        },
      ],
      (c) => String(c.id),
      "checkpoint-row",
      "No checkpoints (batch jobs take none; streaming jobs with --checkpoint_dir do).",
    );
  }

  private renderCheckpointChart(checkpoints: Checkpoint[]): void {
    const recent = checkpoints.slice(-60);
    const key = recent.map((c) => c.id).join();
    if (this.checkpointChart.dataset.key === key) return;
    this.checkpointChart.dataset.key = key;
    this.checkpointChart.hidden = recent.length < 2;
    if (recent.length < 2) return;
    const width = 600;
    const height = 44;
    const step = width / 60;
    const maxBytes = Math.max(1, ...recent.map((c) => c.bytes));
    const maxMs = Math.max(1, ...recent.map((c) => c.duration_ms));
    const bars = recent.map((c, i) => {
      const bh = Math.max(1, (c.bytes / maxBytes) * (height - 4));
      const x = i * step;
      return svg(
        "g",
        {},
        svg("title", {}, `#${c.id}: ${fmt.bytes(c.bytes)} in ${fmt.latency(c.duration_ms)}${c.ok ? "" : " (failed)"}`),
        svg("rect", { x: x + 1, y: height - bh, width: step - 2, height: bh, class: c.ok ? "bar" : "bar bar-failed" }),
        svg("rect", { x: x + 1, y: height - 2 - (c.duration_ms / maxMs) * (height - 4), width: step - 2, height: 2, class: "bar-tick" }),
      );
    });
    this.checkpointChart.replaceChildren(
      svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", class: "bars-svg" }, ...bars),
      h(
        "div",
        { class: "bars-legend muted" },
        h("span", { class: "legend-bar" }),
        `size (largest ${fmt.bytes(maxBytes)})`,
        h("span", { class: "legend-tick" }),
        `duration (longest ${fmt.latency(maxMs)})`,
      ),
    );
  }

  private metricTable(): KeyedTable<Metric> {
    const shown = (m: Metric): string => {
      if (m.kind === "distribution") {
        const mean = m.count ? (m.sum ?? 0) / m.count : null;
        return `count ${fmt.value(m.count)} · mean ${fmt.value(mean)} · min ${fmt.value(m.min)} · max ${fmt.value(m.max)}`;
      }
      return fmt.value(m.value);
    };
    return new KeyedTable<Metric>(
      [
        { title: "Step", cell: (m) => m.step },
        { title: "Namespace", cell: (m) => ({ text: m.namespace, class: m.namespace === "ferrobeam" ? "muted" : "" }) },
        { title: "Name", cell: (m) => ({ text: m.name, class: "mono" }) },
        { title: "Kind", cell: (m) => m.kind },
        { title: "Value", numeric: true, testid: "metric-value", cell: shown },
      ],
      (m) => `${m.step}\u0000${m.namespace}\u0000${m.name}\u0000${m.kind}`,
      "metric-row",
      "No user metrics reported (yet).",
      (tr, m) => {
        tr.dataset.metric = `${m.namespace}/${m.name}`;
        tr.dataset.kind = m.kind;
        // The value cell is named by kind: counter, gauge or distribution.
        tr.cells[4].dataset.testid = m.kind;
      },
    );
  }
}
