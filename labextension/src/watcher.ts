/**
 * Acts once on each kernel the poller reports that asks for something: a restart request in
 * its status (`RestartRequests`), a snapshot waiting for its notebook (`WaitingSnapshots`).
 * Subclasses say what a kernel asks for (a key, or nothing) and what to do about it.
 */

import { ServerConnection } from '@jupyterlab/services';

import { IKernel } from './api';
import { VramPoller } from './poller';

export abstract class KernelWatcher {
  constructor(
    protected readonly _poller: VramPoller,
    protected readonly _settings: ServerConnection.ISettings
  ) {
    _poller.changed.connect(this._check, this);
  }

  /** What ``kernel`` asks for, acted on once per key; undefined: nothing. */
  protected abstract keyOf(kernel: IKernel): string | undefined;

  protected abstract act(kernel: IKernel): Promise<void>;

  private _check(): void {
    for (const kernel of this._poller.snapshot?.kernels.kernels ?? []) {
      const key = this.keyOf(kernel);
      if (key && !this._seen.has(key)) {
        this._seen.add(key);
        void this.act(kernel);
      }
    }
  }

  private readonly _seen = new Set<string>();
}
