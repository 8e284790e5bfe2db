/** Small DOM helpers shared by the views. */

/** A new element with a class and, optionally, text. */
export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/**
 * Make `parent`'s children exactly `children`, in order, moving nodes only when the order
 * changed: a node re-inserted under the pointer would swallow a click on it.
 */
export function syncChildren(parent: HTMLElement, children: HTMLElement[]): void {
  const same =
    parent.children.length === children.length &&
    children.every((child, index) => parent.children[index] === child);
  if (!same) {
    parent.replaceChildren(...children);
  }
}
