// The job's stages as a DAG in SVG, laid out by layout.ts. The drawing is
// rebuilt only when the graph changes; each poll updates the figures in
// the nodes.

import type { Stage } from "./api";
import { setClass, setText, svg } from "./dom";
import { kindClass, kindLabel } from "./kinds";
import { edgePath, layout } from "./layout";

const SIZES = {
  nodeWidth: 204,
  nodeHeight: 84,
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
    for (const box of boxes) {
      const s = byId.get(box.id)!;
      const title = svg("text", { class: "node-title", x: 14, y: 22 }, s.name);
      const subtitle = s.transforms.length > 1 ? ` · ${s.transforms.length} transforms` : "";
      const io = svg("text", { class: "node-fig", x: 14, y: 58, "data-testid": "node-io" });
      const extra = svg("text", { class: "node-fig", x: 14, y: 74, "data-testid": "node-extra" });
      const state = svg("circle", { class: "node-state", cx: W - 14, cy: 17, r: 4.5 });
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
        svg("title", {}, [s.name, ...s.transforms.filter((t) => t !== s.name)].join("\n")),
        svg("rect", { class: "node-box", width: W, height: H, rx: 8 }),
        svg("rect", { class: "node-accent", x: 0, y: 0, width: 5, height: H, rx: 2.5 }),
        title,
        svg("text", { class: "node-kind", x: 14, y: 38 }, kindLabel(s.kind) + subtitle),
        io,
        extra,
        state,
      );
      g.addEventListener("click", () => this.onSelect(s.id));
      g.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") this.onSelect(s.id);
      });
      this.nodes.set(s.id, { g, io, extra, state });
      root.append(g);
    }
    this.el.append(root);
    // Names longer than a node are cut to fit (the full name is the tooltip).
    for (const t of root.querySelectorAll<SVGTextElement>(".node-title")) fit(t, W - 38);
  }
}

function fit(text: SVGTextElement, max: number): void {
  const full = text.textContent ?? "";
  if (text.getComputedTextLength() <= max) return;
  let lo = 1;
  let hi = full.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    text.textContent = full.slice(0, mid) + "…";
    if (text.getComputedTextLength() <= max) lo = mid;
    else hi = mid - 1;
  }
  text.textContent = full.slice(0, lo) + "…";
}
