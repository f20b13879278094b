// A little DOM: build elements, and tables whose rows are kept by key and
// whose cells change only when their text does (so the page updates in
// place: no flicker, selections and scroll positions survive a poll).

type Child = Node | string | null | undefined | false;

export interface Props {
  class?: string;
  testid?: string;
  text?: string;
  title?: string;
  href?: string;
  attrs?: Record<string, string>;
  on?: Partial<Record<keyof HTMLElementEventMap, (e: Event) => void>>;
}

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props.class) el.className = props.class;
  if (props.testid) el.dataset.testid = props.testid;
  if (props.text !== undefined) el.textContent = props.text;
  if (props.title) el.title = props.title;
  if (props.href !== undefined) el.setAttribute("href", props.href);
  for (const [k, v] of Object.entries(props.attrs ?? {})) el.setAttribute(k, v);
  for (const [k, f] of Object.entries(props.on ?? {})) if (f) el.addEventListener(k, f);
  for (const c of children) if (c) el.append(c);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number> = {},
  ...children: Child[]
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c);
  return el;
}

export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

export function setClass(el: Element, cls: string): void {
  if (el.getAttribute("class") !== cls) el.setAttribute("class", cls);
}

export function setTitle(el: HTMLElement, title: string): void {
  if (el.title !== title) el.title = title;
}

/** What a cell shows. */
export interface Cell {
  text: string;
  class?: string;
  title?: string;
  /** Shown under the text, smaller (e.g. a stage's transforms). */
  detail?: string;
}

export interface Column<T> {
  title: string;
  /** Right-aligned, tabular figures. */
  numeric?: boolean;
  class?: string;
  testid?: string;
  cell: (row: T) => Cell | string;
}

export class KeyedTable<T> {
  readonly el: HTMLElement;
  private readonly body: HTMLTableSectionElement;
  private readonly empty: HTMLElement;
  private readonly table: HTMLTableElement;
  private readonly rows = new Map<string, HTMLTableRowElement>();

  constructor(
    private readonly columns: Column<T>[],
    private readonly key: (row: T) => string,
    private readonly rowTestId: string,
    emptyText: string,
    private readonly rowSetup?: (tr: HTMLTableRowElement, row: T) => void,
  ) {
    const head = h(
      "tr",
      {},
      ...columns.map((c) =>
        h("th", { class: [c.numeric ? "num" : "", c.class ?? ""].join(" ").trim(), text: c.title }),
      ),
    );
    this.body = h("tbody");
    this.empty = h("p", { class: "empty", text: emptyText });
    this.empty.hidden = true; // until the first update
    this.table = h("table", { class: "grid" }, h("thead", {}, head), this.body);
    this.table.hidden = true;
    this.el = h("div", { class: "table-wrap" }, this.table, this.empty);
  }

  update(rows: T[]): void {
    const seen = new Set<string>();
    let previous: HTMLTableRowElement | null = null;
    for (const row of rows) {
      const key = this.key(row);
      seen.add(key);
      let tr = this.rows.get(key);
      if (!tr) {
        tr = this.createRow(key, row);
        this.rows.set(key, tr);
      }
      this.fill(tr, row);
      const expected: ChildNode | null = previous ? previous.nextSibling : this.body.firstChild;
      if (expected !== tr) this.body.insertBefore(tr, expected);
      previous = tr;
    }
    for (const [key, tr] of this.rows) {
      if (!seen.has(key)) {
        tr.remove();
        this.rows.delete(key);
      }
    }
    this.empty.hidden = rows.length > 0;
    this.table.hidden = rows.length === 0;
  }

  row(key: string): HTMLTableRowElement | undefined {
    return this.rows.get(key);
  }

  private createRow(key: string, row: T): HTMLTableRowElement {
    const tr = h("tr", { testid: this.rowTestId, attrs: { "data-key": key } });
    for (const c of this.columns) {
      const td = h("td", {
        testid: c.testid,
        class: [c.numeric ? "num" : "", c.class ?? ""].join(" ").trim(),
      });
      td.append(h("span", { class: "cell-text" }));
      tr.append(td);
    }
    this.rowSetup?.(tr, row);
    return tr;
  }

  private fill(tr: HTMLTableRowElement, row: T): void {
    this.columns.forEach((c, i) => {
      const td = tr.cells[i];
      const raw = c.cell(row);
      const cell: Cell = typeof raw === "string" ? { text: raw } : raw;
      const span = td.firstElementChild!;
      setClass(span, cell.class ? `cell-text ${cell.class}` : "cell-text");
      setTitle(td, cell.title ?? "");
      setText(span, cell.text);
      let detail = td.querySelector<HTMLElement>(".cell-detail");
      if (cell.detail) {
        if (!detail) {
          detail = h("span", { class: "cell-detail" });
          span.after(detail);
        }
        setText(detail, cell.detail);
      } else if (detail) {
        detail.remove();
      }
    });
  }
}

/** A titled card; `tools` go to the right of the title. */
export function section(
  title: string,
  testid: string,
  tools: Child,
  ...body: Child[]
): HTMLElement {
  return h(
    "section",
    { class: "card", testid },
    h("div", { class: "card-head" }, h("h2", { text: title }), tools),
    ...body,
  );
}
