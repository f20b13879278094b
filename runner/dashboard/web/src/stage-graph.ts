// The job's stages as a DAG in SVG, laid out by layout.ts. The drawing is
// rebuilt only when the graph changes; each poll updates the figures in
// the nodes.

import type { Stage } from "./api";
import { setClass, setText, svg } from "./dom";
import { kindClass, kindLabel } from "./kinds";
import { stageLabel } from "./labels";
import { edgePath, layout } from "./layout";

const SIZES = {
  nodeWidth: 204,
  nodeHeight: 98,
  gapX: 56,
  gapY: 20,
  laneHeight: 10,
  margin: 16,
};

/** The figures a node shows, worked out by the job view. */
export interface NodeFigures {
  io: string;
  extra: string;
  /** A warning look (e.g. a watermark far behind). */
  hot: boolean;
}

interface NodeParts {
  g: SVGGElement;
  io: SVGTextElement;
  extra: SVGTextElement;
  state: SVGCircleElement;
}

export class StageGraph {
  readonly el: HTMLDivElement;
  private shape = "";
  private nodes = new Map<string, NodeParts>();
  private selected: string | null = null;

  constructor(private readonly onSelect: (stageId: string) => void) {
    this.el = document.createElement("div");
    this.el.className = "graph-wrap";
  }

  update(stages: Stage[], figures: (s: Stage) => NodeFigures): void {
    const shape = JSON.stringify(stages.map((s) => [s.id, s.name, s.kind, s.inputs]));
    if (shape !== this.shape) {
      this.shape = shape;
      this.draw(stages);
    }
    for (const s of stages) {
      const parts = this.nodes.get(s.id);
      if (!parts) continue;
      const f = figures(s);
      setText(parts.io, f.io);
      setText(parts.extra, f.extra);
      setClass(parts.extra, f.hot ? "node-fig hot" : "node-fig");
      setClass(parts.state, `node-state state-${s.state}`);
      setClass(parts.g, this.nodeClass(s));
      parts.g.dataset.state = s.state;
    }
  }

  select(stageId: string | null): void {
    this.selected = stageId;
    for (const [id, parts] of this.nodes) parts.g.classList.toggle("selected", id === stageId);
  }

  private nodeClass(s: Stage): string {
    return `node ${kindClass(s.kind)}${s.id === this.selected ? " selected" : ""}`;
  }

  private draw(stages: Stage[]): void {
    this.nodes.clear();
    this.el.replaceChildren();
    if (!stages.length) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "No stages yet: the job has not been planned.";
      this.el.append(p);
      return;
    }
    const { boxes, edges, width, height } = layout(stages, SIZES);
    const W = SIZES.nodeWidth;
    const H = SIZES.nodeHeight;
    const root = svg("svg", {
      class: "stage-graph",
      "data-testid": "stage-graph",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      // Shrunk to fit the page, down to two thirds; wider graphs scroll.
      style: `width: min(100%, ${width}px); min-width: ${Math.round(width * 0.66)}px; height: auto`,
      role: "img",
      "aria-label": `Stage graph: ${stages.length} stages`,
    });
    root.append(
      svg(
        "defs",
        {},
        svg(
          "marker",
          {
            id: "arrow",
            viewBox: "0 0 10 10",
            refX: 9,
            refY: 5,
            markerWidth: 7,
            markerHeight: 7,
            orient: "auto-start-reverse",
          },
          svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }),
        ),
      ),
    );
    const edgeLayer = svg("g", { class: "edges" });
    for (const e of edges) {
      edgeLayer.append(
        svg("path", {
          class: "edge",
          d: edgePath(e.points),
          "marker-end": "url(#arrow)",
          "data-testid": "stage-edge",
          "data-from": e.from,
          "data-to": e.to,
        }),
      );
    }
    root.append(edgeLayer);
    const byId = new Map(stages.map((s) => [s.id, s]));
    const titles: [string, SVGTSpanElement, SVGTSpanElement, SVGGElement, SVGGElement][] = [];
    for (const box of boxes) {
      const s = byId.get(box.id)!;
      const label = stageLabel(s);
      const line1 = svg("tspan", { x: 14, y: 21 });
      const line2 = svg("tspan", { x: 14, y: 37 });
      const title = svg("text", { class: "node-title" }, line1, line2);
      const subtitle = s.transforms.length > 1 ? ` · ${s.transforms.length} transforms` : "";
      const io = svg("text", { class: "node-fig", x: 14, y: 72, "data-testid": "node-io" });
      const extra = svg("text", { class: "node-fig", x: 14, y: 88, "data-testid": "node-extra" });
      const state = svg("circle", { class: "node-state", cx: W - 14, cy: 17, r: 4.5 });
      const rest = svg(
        "g",
        {},
        svg("text", { class: "node-kind", x: 14, y: 53 }, kindLabel(s.kind) + subtitle),
        io,
        extra,
      );
      const body = svg("g", {}, title, rest);
      const g = svg(
        "g",
        {
          class: this.nodeClass(s),
          transform: `translate(${box.x},${box.y})`,
          "data-testid": "stage-node",
          "data-stage-id": s.id,
          "data-layer": box.layer,
          tabindex: 0,
        },
        svg("title", {}, [label, "", ...s.transforms].join("\n")),
        svg("rect", { class: "node-box", width: W, height: H, rx: 8 }),
        svg("rect", { class: "node-accent", x: 0, y: 0, width: 5, height: H, rx: 2.5 }),
        body,
        state,
      );
      g.addEventListener("click", () => this.onSelect(s.id));
      g.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") this.onSelect(s.id);
      });
      this.nodes.set(s.id, { g, io, extra, state });
      root.append(g);
      titles.push([label, line1, line2, body, rest]);
    }
    this.el.append(root);
    // Names take up to two lines, cut to fit (the full name is the
    // tooltip); below a one-line name the rest moves up, and the whole
    // is centred.
    for (const [label, line1, line2, body, rest] of titles) {
      if (!wrap(label, line1, line2, W - 36)) {
        rest.setAttribute("transform", "translate(0,-16)");
        body.setAttribute("transform", "translate(0,8)");
      }
    }
  }
}

/** Splits `label` over two lines of at most `max` pixels, breaking after
 * a space, slash, comma or plus if it can; false if one line holds it. */
function wrap(label: string, line1: SVGTSpanElement, line2: SVGTSpanElement, max: number): boolean {
  line1.textContent = label;
  if (line1.getComputedTextLength() <= max) return false;
  const tokens = label.split(/(?<=[ /,+])/);
  let first = "";
  for (const t of tokens) {
    line1.textContent = first + t;
    if (line1.getComputedTextLength() > max) break;
    first += t;
  }
  if (!first) {
    // One long word: break it where the line ends.
    fit(line1, label, max, "");
    first = line1.textContent ?? "";
  }
  line1.textContent = first.trimEnd();
  fit(line2, label.slice(first.length).trimStart(), max, "…");
  return true;
}

/** The longest prefix of `text` (plus `more`) that fits in `max` pixels. */
function fit(el: SVGTextContentElement, text: string, max: number, more: string): void {
  el.textContent = text;
  if (el.getComputedTextLength() <= max) return;
  let lo = 1;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    el.textContent = text.slice(0, mid) + more;
    if (el.getComputedTextLength() <= max) lo = mid;
    else hi = mid - 1;
  }
  el.textContent = text.slice(0, lo) + more;
}
