/**
 * Pages of a list route. Iterate it (`for await`) for every item across pages, or call
 * `nextItems()` page by page; `nextToken` resumes a listing later.
 */
export class Paginator<T> implements AsyncIterable<T> {
  private token: string | undefined;
  private started = false;

  /** `fetchPage(token)` returns one page and the token of the next (undefined on the last). */
  constructor(
    private readonly fetchPage: (token: string | undefined) => Promise<{ items: T[]; nextToken: string | undefined }>,
    nextToken?: string,
  ) {
    this.token = nextToken;
  }

  get hasNext(): boolean {
    return !this.started || this.token !== undefined;
  }

  get nextToken(): string | undefined {
    return this.token;
  }

  async nextItems(): Promise<T[]> {
    if (!this.hasNext) return [];
    // (started only once a page came: a failed first request can be tried again)
    const page = await this.fetchPage(this.token);
    this.started = true;
    this.token = page.nextToken;
    return page.items;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    while (this.hasNext) {
      for (const item of await this.nextItems()) yield item;
    }
  }
}

/** Runs `fn`; resolves false instead of throwing when it fails with error `code` (e.g. deleting what is gone). */
export async function falseOn(code: string, fn: () => Promise<unknown>): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === code) return false;
    throw err;
  }
}
