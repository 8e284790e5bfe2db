/**
 * Which kernel is "this" one for the gauges, the rows and the status item: the kernel of the
 * notebook or console last active in the shell, as JupyterLab's own kernel status follows both.
 */

import { ISessionContext, IWidgetTracker } from '@jupyterlab/apputils';
import { ISignal, Signal } from '@lumino/signaling';
import { FocusTracker, Widget } from '@lumino/widgets';

/** Whose kernel it is, for the labels: "This notebook", "This console". */
export type KernelOwner = 'notebook' | 'console';

/** What the views read; `CurrentKernel` is the one the plugin makes. */
export interface ICurrentKernel {
  /** The kernel's id; null without a notebook or console, or while its kernel is not started. */
  readonly id: string | null;
  /** Null without a notebook or console. */
  readonly owner: KernelOwner | null;
}

/** A notebook panel or a console panel: a widget with a kernel session. */
export interface IKernelWidget extends Widget {
  readonly sessionContext: ISessionContext;
}

export type KernelTrackers = Partial<Record<KernelOwner, IWidgetTracker<IKernelWidget> | null>>;

/** The shell's signal of the widget that has the focus, where the shell has one. */
export interface IFocusShell {
  readonly currentChanged?: ISignal<unknown, FocusTracker.IChangedArgs<Widget>>;
}

export class CurrentKernel implements ICurrentKernel {
  constructor(trackers: KernelTrackers, shell: IFocusShell | null) {
    this._trackers = (['notebook', 'console'] as const).flatMap(owner => {
      const tracker = trackers[owner];
      return tracker ? [{ owner, tracker }] : [];
    });
    for (const { tracker } of this._trackers) {
      tracker.currentChanged.connect(this._onTrackerChanged, this);
    }
    // a tracker's current widget stays when the focus moves to another tracker's: going back
    // from a console to the same notebook changes no tracker's current, only the shell's
    shell?.currentChanged?.connect(this._onShellChanged, this);
  }

  /** Emitted when another notebook or console became the current one. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The notebook or console last active; a closed one gives way to what its tracker has. */
  get widget(): IKernelWidget | null {
    const last = this._last;
    if (last && !last.isDisposed && this._ownerOf(last)) {
      return last;
    }
    return (
      this._trackers.find(({ tracker }) => tracker.currentWidget)?.tracker.currentWidget ?? null
    );
  }

  get id(): string | null {
    return this.widget?.sessionContext.session?.kernel?.id ?? null;
  }

  get owner(): KernelOwner | null {
    const widget = this.widget;
    return widget ? this._ownerOf(widget) : null;
  }

  private _ownerOf(widget: Widget): KernelOwner | null {
    return this._trackers.find(({ tracker }) => tracker.has(widget))?.owner ?? null;
  }

  private _onTrackerChanged(_: unknown, widget: IKernelWidget | null): void {
    if (widget) {
      this._last = widget;
    }
    this._changed.emit();
  }

  private _onShellChanged(_: unknown, args: FocusTracker.IChangedArgs<Widget>): void {
    const widget = args.newValue;
    if (widget && widget !== this._last && this._ownerOf(widget)) {
      this._last = widget as IKernelWidget;
      this._changed.emit();
    }
  }

  private readonly _trackers: { owner: KernelOwner; tracker: IWidgetTracker<IKernelWidget> }[];
  private readonly _changed = new Signal<this, void>(this);
  private _last: IKernelWidget | null = null;
}
