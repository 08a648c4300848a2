/** A FIFO queue with O(1) push and shift (an array with a moving head, compacted now and then). */
export class Deque<T> {
  private items: T[] = [];
  private head = 0;

  /** Number of items queued. */
  get length(): number {
    return this.items.length - this.head;
  }

  /** Add `item` at the back. */
  push(item: T): void {
    this.items.push(item);
  }

  /** Remove and return the front item (undefined when empty). */
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head] as T;
    this.items[this.head] = undefined as unknown as T;
    this.head++;
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** The item at position `i` from the front (undefined when out of range). */
  at(i: number): T | undefined {
    return i >= 0 && i < this.length ? this.items[this.head + i] : undefined;
  }

  /** Replace the item at position `i` from the front (which must exist). */
  set(i: number, item: T): void {
    this.items[this.head + i] = item;
  }

  /** Remove everything. */
  clear(): void {
    this.items = [];
    this.head = 0;
  }

  /** Iterate front to back. */
  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i] as T;
  }
}
