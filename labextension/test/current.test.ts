import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Signal } from '@lumino/signaling';
// types only: @lumino/widgets needs a DOM at import
import type { FocusTracker, Widget } from '@lumino/widgets';

import { CurrentKernel, IKernelWidget } from '../src/current';

/** A notebook or console panel: its session's kernel, if started. */
function panel(kernelId: string | null): IKernelWidget {
  const kernel = kernelId === null ? null : { id: kernelId };
  return { isDisposed: false, sessionContext: { session: { kernel } } } as unknown as IKernelWidget;
}

/** What CurrentKernel uses of a WidgetTracker: the current widget follows adding and focus. */
class FakeTracker {
  readonly currentChanged = new Signal<this, IKernelWidget | null>(this);
  currentWidget: IKernelWidget | null = null;
  readonly widgets = new Set<IKernelWidget>();

  has(widget: Widget): boolean {
    return this.widgets.has(widget as IKernelWidget);
  }

  focus(widget: IKernelWidget): void {
    this.widgets.add(widget);
    if (this.currentWidget !== widget) {
      this.currentWidget = widget;
      this.currentChanged.emit(widget);
    }
  }

  close(widget: IKernelWidget): void {
    (widget as { isDisposed: boolean }).isDisposed = true;
    this.widgets.delete(widget);
    if (this.currentWidget === widget) {
      this.currentWidget = [...this.widgets].pop() ?? null;
      this.currentChanged.emit(this.currentWidget);
    }
  }
}

class FakeShell {
  readonly currentChanged = new Signal<this, FocusTracker.IChangedArgs<Widget>>(this);
  private _current: Widget | null = null;

  focus(widget: Widget): void {
    const oldValue = this._current;
    this._current = widget;
    this.currentChanged.emit({ oldValue, newValue: widget });
  }
}

function setUp(withConsoles = true) {
  const notebooks = new FakeTracker();
  const consoles = new FakeTracker();
  const shell = new FakeShell();
  const current = new CurrentKernel(
    { notebook: notebooks as never, console: withConsoles ? (consoles as never) : null },
    shell
  );
  let changes = 0;
  current.changed.connect(() => {
    changes += 1;
  });
  /** Focus as JupyterLab does: the widget's tracker, then the shell. */
  const focus = (tracker: FakeTracker, widget: IKernelWidget) => {
    tracker.focus(widget);
    shell.focus(widget as unknown as Widget);
  };
  return { notebooks, consoles, shell, current, focus, changes: () => changes };
}

describe('CurrentKernel', () => {
  it('is nothing without a notebook or console', () => {
    const { current } = setUp();
    assert.equal(current.id, null);
    assert.equal(current.owner, null);
  });

  it("follows the focus from a notebook's kernel to a console's and back", () => {
    const { notebooks, consoles, current, focus, changes } = setUp();
    const notebook = panel('nb-kernel');
    const console = panel('console-kernel');

    focus(notebooks, notebook);
    assert.deepEqual([current.id, current.owner], ['nb-kernel', 'notebook']);

    focus(consoles, console);
    assert.deepEqual([current.id, current.owner], ['console-kernel', 'console']);

    // the notebook tracker's current never changed: only the shell tells
    focus(notebooks, notebook);
    assert.deepEqual([current.id, current.owner], ['nb-kernel', 'notebook']);
    assert.equal(changes(), 3, 'the views redraw on each change');
  });

  it('keeps the last notebook or console while other widgets have the focus', () => {
    const { consoles, shell, current, focus, changes } = setUp();
    focus(consoles, panel('console-kernel'));
    const before = changes();
    shell.focus({} as Widget); // the launcher, a file, the VRAM panel itself
    assert.equal(current.id, 'console-kernel');
    assert.equal(changes(), before);
  });

  it("falls back to the other tracker's current widget when a console closes", () => {
    const { notebooks, consoles, current, focus } = setUp();
    const console = panel('console-kernel');
    focus(notebooks, panel('nb-kernel'));
    focus(consoles, console);
    consoles.close(console);
    assert.deepEqual([current.id, current.owner], ['nb-kernel', 'notebook']);
  });

  it('has no id while the kernel is not started, yet knows whose it is', () => {
    const { consoles, current, focus } = setUp();
    focus(consoles, panel(null));
    assert.deepEqual([current.id, current.owner], [null, 'console']);
  });

  it('works with notebooks only and a shell without currentChanged (Notebook 7)', () => {
    const notebooks = new FakeTracker();
    const current = new CurrentKernel({ notebook: notebooks as never, console: null }, {});
    notebooks.focus(panel('nb-kernel'));
    assert.deepEqual([current.id, current.owner], ['nb-kernel', 'notebook']);
  });
});
