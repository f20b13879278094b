export interface View {
  readonly el: HTMLElement;
  /** Fetches and shows the latest; resolves to the server's version when
   * it learnt it. */
  poll(): Promise<string | void>;
}
